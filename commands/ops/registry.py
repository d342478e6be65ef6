"""Where services come from: `ConfiguredRegistry`, the services the ops commands use.

It combines the config file's `[services.*]` (read-only) with services admins register
at runtime (team memory, so they survive restarts). A service's `call` rules are
matched against the path as `normalise_call_path` normalises it (RFC 3986, 6.2.2), so a
path cannot mean one thing to the allow-list and another to the service.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote

from config.settings import ServiceSettings
from core.context import MemoryView

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

    def may_call(self, path: str) -> bool:
        """Whether `call` may request `path` (already normalised) on this service."""
        return any(fnmatch.fnmatchcase(path, rule) for rule in self.call)

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


class CallRefused(ValueError):
    """A path `call` will not send, whatever the allow-list says; says why, for people."""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DOUBLE_ESCAPE = re.compile(r"%25[0-9A-Fa-f]{2}", re.IGNORECASE)
# What may stay as it is: RFC 3986 pchar and "/" (plus "?" in a query), and "%" since
# every "%" left starts a valid escape. Everything else is percent-encoded as UTF-8.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
_REFUSED_ESCAPES = {
    "2F": "an encoded slash (%2F)",
    "5C": "an encoded backslash (%5C)",
    "00": "an encoded NUL (%00)",
}


def normalise_call_path(raw: str) -> str:
    """The path (and query) `call` sends for `raw`, or `CallRefused` saying why not.

    Percent-escapes of unreserved characters are decoded and the others upper-cased
    (RFC 3986 6.2.2.1-2), characters a path may not hold are percent-encoded as UTF-8,
    and dot segments are removed (5.2.4), so `/v1/items/%2e%2e` is `/v1`. Refused: what
    services read in different ways: an encoded slash or backslash in the path, an
    encoded NUL, a backslash, a double-encoded escape (`%252e`), a `%` that starts no
    escape, a fragment, control characters, and a path that does not start with `/`.
    """
    if not raw.startswith("/"):
        raise CallRefused("it does not start with /")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise CallRefused("it holds control characters")
    if "\\" in raw:
        raise CallRefused("it holds a backslash, which some services read as a slash")
    if "#" in raw:
        raise CallRefused("it holds a fragment (#), which is never sent to a service")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise CallRefused("it is not valid text") from None
    if _STRAY_PERCENT.search(raw):
        raise CallRefused("it holds a % that starts no escape (a literal % is %25)")
    if _DOUBLE_ESCAPE.search(raw):
        raise CallRefused("it holds a double-encoded escape (%25 and two hex digits)")
    path, question, query = raw.partition("?")
    for escape in _ESCAPE.finditer(path):
        refused = _REFUSED_ESCAPES.get(escape.group(1).upper())
        if refused:
            raise CallRefused(f"it holds {refused}, which services read in different ways")
    if "%00" in query:
        raise CallRefused("it holds an encoded NUL (%00)")
    path = _remove_dot_segments(quote(_decode_unreserved(path), safe=_PATH_SAFE))
    if question:
        query = quote(_decode_unreserved(query), safe=_QUERY_SAFE)
    return path + question + query


def _decode_unreserved(text: str) -> str:
    def one(escape: re.Match[str]) -> str:
        char = chr(int(escape.group(1), 16))
        return char if char in _UNRESERVED else escape.group(0).upper()

    return _ESCAPE.sub(one, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for a path that starts with `/`: `/a/b/../c/./d` is `/a/c/d`."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if kept:
                kept.pop()
            if last:
                kept.append("")  # `/a/b/..` is `/a/`
        elif segment == ".":
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)


class RegistryRefused(ValueError):
    """The registry will not do that; the message is for the person."""


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
