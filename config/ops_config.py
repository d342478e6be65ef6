"""Reading the operations tables of the config file: services, runbooks, access, groups.

Unlike `[bot]` or `[ops]`, these are tables of named entries (`[services.billing]`,
`[runbooks.restart-web]`), so they are read here rather than through the loader's
one-rule-per-key table. Each problem raises `TableError` naming the dotted key; the
loader turns it into its one-line `ConfigError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from config.settings import AccessSettings, RunbookSettings, ServiceSettings, Settings

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
_ARG = re.compile(r"[a-z_][a-z0-9_]*\Z")
_SERVICE_KEYS = ("url", "health", "tcp", "tags", "description", "call")
_RUNBOOK_KEYS = ("argv", "args", "timeout_seconds", "description")


class TableError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TableError(key, f"must be a table ([{key}])")
    return value


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TableError(key, "must be a list of strings")
    return tuple(value)


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TableError(key, "must be a string")
    return value


def _unknown(key: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for leaf in table:
        if leaf not in known:
            raise TableError(f"{key}.{leaf}", f"unknown key (known: {', '.join(known)})")


def check_name(key: str, name: str) -> None:
    if not _NAME.match(name):
        raise TableError(
            key, f"{name!r} is not a valid name (lower-case letters, digits, '-', '_', '.')"
        )


def check_url(url: str) -> str | None:
    """Why `url` cannot be a service's base URL, or None if it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not hold a user name or password"
    return None


def split_host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def read_groups(key: str, value: Any) -> dict[str, tuple[str, ...]]:
    table = _table(key, value)
    return {name: _strings(f"{key}.{name}", users) for name, users in table.items()}


def read_services(value: Any) -> dict[str, ServiceSettings]:
    services = {}
    for name, raw in _table("services", value).items():
        key = f"services.{name}"
        check_name(key, name)
        table = _table(key, raw)
        _unknown(key, table, _SERVICE_KEYS)
        tcp = _string(f"{key}.tcp", table.get("tcp", ""))
        if tcp and split_host_port(tcp) is None:
            raise TableError(f"{key}.tcp", 'must be "host:port"')
        # A service is reached over HTTP (url), checked over TCP (tcp), or both.
        url = _string(f"{key}.url", table.get("url", ""))
        if not url and not tcp:
            raise TableError(
                f"{key}.url",
                "is required, or tcp for a service checked by connecting to it (e.g. url = "
                '"http://billing.internal:8080", or tcp = "db1.internal:5432")',
            )
        if url and (problem := check_url(url)):
            raise TableError(f"{key}.url", problem)
        health = _string(f"{key}.health", table.get("health", ""))
        if health and not health.startswith("/"):
            raise TableError(f"{key}.health", 'must be a path starting with "/"')
        call = _strings(f"{key}.call", table.get("call", []))
        for path in call:
            if not path.startswith("/"):
                raise TableError(f"{key}.call", f'{path!r} must start with "/"')
        for leaf, needs_url in (("health", bool(health)), ("call", bool(call))):
            if needs_url and not url:
                raise TableError(f"{key}.{leaf}", f"needs url: {leaf} is requested over HTTP")
        services[name] = ServiceSettings(
            name=name,
            url=url.rstrip("/"),
            health=health,
            tcp=tcp,
            tags=_strings(f"{key}.tags", table.get("tags", [])),
            description=_string(f"{key}.description", table.get("description", "")),
            call=call,
        )
    return services


def read_runbooks(value: Any) -> dict[str, RunbookSettings]:
    runbooks = {}
    for name, raw in _table("runbooks", value).items():
        key = f"runbooks.{name}"
        check_name(key, name)
        table = _table(key, raw)
        _unknown(key, table, _RUNBOOK_KEYS)
        argv = _strings(f"{key}.argv", table.get("argv"))
        if not argv or not argv[0]:
            raise TableError(f"{key}.argv", 'must name a program, e.g. ["systemctl", "status"]')
        args: dict[str, str] = {}
        for arg, raw_pattern in _table(f"{key}.args", table.get("args", {})).items():
            if not _ARG.match(arg):
                raise TableError(f"{key}.args.{arg}", "argument names are lower-case words")
            pattern = _string(f"{key}.args.{arg}", raw_pattern)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise TableError(f"{key}.args.{arg}", f"bad regular expression: {exc}") from None
            args[arg] = pattern
        for element in argv:
            for used in re.findall(r"\{([^{}]*)\}", element):
                if used not in args:
                    raise TableError(f"{key}.argv", f"uses {{{used}}}, which args does not declare")
        timeout = table.get("timeout_seconds", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise TableError(f"{key}.timeout_seconds", "must be a number > 0")
        runbooks[name] = RunbookSettings(
            name=name,
            argv=argv,
            args=args,
            timeout_seconds=float(timeout),
            description=_string(f"{key}.description", table.get("description", "")),
        )
    return runbooks


def read_access(value: Any, default: AccessSettings) -> AccessSettings:
    table = _table("access", value)
    _unknown("access", table, ("commands",))
    commands = dict(default.commands)
    for name, groups in _table("access.commands", table.get("commands", {})).items():
        commands[name] = _strings(f"access.commands.{name}", groups)
    return AccessSettings(commands=commands)


def _key(name: str) -> str:
    # Names may hold "." (`[services.db.main]` would be two tables): quote those.
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def render_ops_tables(settings: Settings, show: Callable[[Any], str]) -> list[str]:
    """The services, runbooks and access rules, for `harken check`."""
    out: list[str] = []
    for service in settings.services.values():
        out += ["", f"[services.{_key(service.name)}]"]
        for leaf in _SERVICE_KEYS:
            if getattr(service, leaf):
                out.append(f"{leaf} = {show(getattr(service, leaf))}")
    for runbook in settings.runbooks.values():
        out += ["", f"[runbooks.{_key(runbook.name)}]", f"argv = {show(runbook.argv)}"]
        if runbook.args:
            out.append(f"args = {show(runbook.args)}")
        out.append(f"timeout_seconds = {show(runbook.timeout_seconds)}")
        if runbook.description:
            out.append(f"description = {show(runbook.description)}")
    out += ["", "[access.commands]"]
    out += [f"{_key(name)} = {show(groups)}" for name, groups in settings.access.commands.items()]
    return out
