"""Where services come from: the `ServiceRegistry` interface and Harken's own registry.

`Service` is what the ops commands work with. A registry lists, finds, adds and removes
services; `ConfiguredRegistry` combines the config file's `[services.*]` (read-only) with
services admins register at runtime (kept in team memory, so they survive restarts). A
discovery source (Consul, etcd, Kubernetes) would be another `ServiceRegistry`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from commands.context import MemoryView
from config.settings import ServiceSettings

SERVICES_NS = "ops:services"
"""Team memory: registered services, by name."""
STATUS_NS = "ops:status"
"""Team memory: the last known health of each service, by name."""


@dataclass(frozen=True)
class Service(ServiceSettings):
    """A service as the ops commands see it: what a `[services.*]` table says (only
    services from the config have `call` paths), and where it came from."""

    source: str = "config"
    """`config`, or `registered by <input>:<user>`."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """What a health check looks at, for people."""
        if self.tcp:
            return f"tcp {self.tcp}"
        if self.health:
            return f"GET {self.url}{self.health}"
        return "nothing (no health path or tcp address)"

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "health": self.health,
            "tcp": self.tcp,
            "tags": list(self.tags),
            "description": self.description,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, name: str, raw: Any) -> Service | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
            return None
        return cls(
            name=name,
            url=raw["url"],
            health=str(raw.get("health", "")),
            tcp=str(raw.get("tcp", "")),
            tags=tuple(str(t) for t in raw.get("tags", ())),
            description=str(raw.get("description", "")),
            source=str(raw.get("source", "registered")),
        )

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Service:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(settings)})


class RegistryRefused(ValueError):
    """The registry will not do that; the message is for the person."""


class ServiceRegistry(Protocol):
    """A source of services. Methods may block (they run on a command's worker)."""

    def list(self) -> list[Service]: ...

    def get(self, name: str) -> Service | None: ...

    def register(self, service: Service) -> None:
        """Add or replace a service; raise `RegistryRefused` if this source cannot."""

    def deregister(self, name: str) -> bool:
        """Remove a service; False if there was none. Raise `RegistryRefused` if this
        source cannot remove it (a service from the config file)."""


class ConfiguredRegistry:
    """The config's services, plus those registered at runtime (in team memory)."""

    def __init__(self, configured: Mapping[str, ServiceSettings], memory: MemoryView) -> None:
        self._configured = {n: Service.from_settings(s) for n, s in configured.items()}
        self._memory = memory

    def list(self) -> list[Service]:
        found = dict(self._configured)
        names = self._memory.keys()  # a MemoryView, not a dict: keys() asks memory
        for name in names:
            service = Service.from_json(name, self._memory.get(name))
            if service is not None and name not in found:
                found[name] = service
        return [found[name] for name in sorted(found)]

    def get(self, name: str) -> Service | None:
        if name in self._configured:
            return self._configured[name]
        return Service.from_json(name, self._memory.get(name))

    def register(self, service: Service) -> None:
        if service.name in self._configured:
            raise RegistryRefused(
                f"`{service.name}` comes from the config file; change it there instead."
            )
        self._memory.set(service.name, {**service.to_json(), "at": time.time()})

    def deregister(self, name: str) -> bool:
        if name in self._configured:
            raise RegistryRefused(f"`{name}` comes from the config file; remove it there instead.")
        return self._memory.delete(name)
