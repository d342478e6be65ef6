"""Show the effective settings as a TOML config file, for `harken check`.

The output is a config `--config` accepts and that gives the same settings, with each
value's origin in a comment and secrets masked, so a user sees exactly what Harken will
run with and where each value came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from config.builder import DERIVED
from config.inputs import input_env_var
from config.loader import DATA_DIR_ENV_VAR
from config.ops_config import render_ops_tables
from config.rules import RULES, SECTION_SECRETS
from config.settings import Secret, Settings
from config.streams_config import render_streams


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Secret):
        return '"***"'
    # Dates and times from TOML render as TOML dates in isoformat.
    return str(getattr(value, "isoformat", lambda: value)())


def _table(header: str, rows: list[tuple[str, str, str | None]]) -> list[str]:
    width = max((len(k) + 3 + len(v) for k, v, _ in rows), default=0)
    lines = [header]
    for key, value, origin in rows:
        assignment = f"{key} = {value}"
        lines.append(f"{assignment:<{width}}  # {origin}" if origin else assignment)
    return lines


def render_settings(settings: Settings) -> str:
    """The effective settings as a TOML config file, each value's origin noted.

    This is what `harken check` prints: saved and given to `--config`, it gives the same
    settings (every path in it is absolute). Secrets come only from the environment, so
    they appear as comments: `# bot_token = "***"` when set, `(unset)` when not.
    Comments say where each value came from (`default`, `file`, `env VAR`, `cli`).
    """
    origins = settings.origins
    out = [
        "# Harken effective settings",
        f"# source: {settings.source}",
        f"# data directory: {settings.bot.data_dir}",
        "# Comments say where each value came from: default, file, env <VAR> or cli.",
        "# Saved to a file, this is a config for --config; secrets stay in the environment.",
    ]
    sections: Mapping[str, Any] = {
        "bot": settings.bot,
        "memory": settings.memory,
        "log": settings.log,
        "scheduler": settings.scheduler,
        "ops": settings.ops,
        "health": settings.health,
        "cluster": settings.cluster,
        "identity": settings.identity,
    }
    # Paths left empty follow another setting: say where they lead.
    derived = {
        "memory.path": f"{settings.memory.path} (memory in bot.data_dir)",
        "scheduler.path": (
            f"{settings.scheduler.job_store(settings.memory.path)} (beside the memory store)"
        ),
        "log.file": f"stderr (an interactive shell: {settings.bot.data_dir}/harken.log)",
        "cluster.name": "<hostname>-<pid> of each process",
    }
    for section, values in sections.items():
        rows = []
        secrets = []
        for f in dataclasses.fields(values):
            key = f"{section}.{f.name}"
            value, origin = getattr(values, f.name), origins.get(key)
            if key in SECTION_SECRETS:
                shown = _toml_value(mask_url(value.reveal())) if value else "(unset)"
                secrets.append(f"# {f.name} = {shown}  (secret: env {SECTION_SECRETS[key]} only)")
                continue
            if origin == DERIVED:
                value, origin = "", "default"
            if key in derived and not value:
                origin = f"{origin}: {derived[key]}"
            rows.append((f.name, _toml_value(value), origin))
        out += ["", *_table(f"[{section}]", rows), *secrets]
    out += render_ops_tables(settings, _toml_value)
    out += render_streams(settings, _toml_value)
    for name, settings_for in settings.inputs.items():
        prefix = f"inputs.{name}"
        rows = [("admins", _toml_value(settings_for.admins), origins.get(f"{prefix}.admins"))]
        if settings_for.groups:
            rows.append(
                ("groups", _toml_value(settings_for.groups), origins.get(f"{prefix}.groups"))
            )
        rows += [
            (_toml_key(k), _toml_value(v), origins.get(f"{prefix}.{k}"))
            for k, v in settings_for.options.items()
        ]
        started = "started" if name in settings.bot.inputs else "not started (not in bot.inputs)"
        out += ["", *_table(f"[{_toml_key_path(prefix)}]  # {started}", rows)]
        declared = settings_for.spec.secrets if settings_for.spec else ()
        secret_names = dict.fromkeys([*declared, *settings_for.secrets])
        for leaf in secret_names:
            var = input_env_var(name, leaf)
            shown = '"***"' if leaf in settings_for.secrets else "(unset)"
            out.append(f"# {_toml_key(leaf)} = {shown}  (secret: env {var} only)")
    if settings.unknown_env:
        out += [
            "",
            "# Ignored environment variables (they match no setting):",
            *(f"#   {var}{_env_hint(var, settings)}" for var in settings.unknown_env),
        ]
    return "\n".join(out) + "\n"


def mask_url(url: str) -> str:
    """A database URL (or libpq `key=value` string) with its password replaced by `***`."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not shown: not a valid URL)"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _toml_key_path(dotted: str) -> str:
    return ".".join(_toml_key(part) for part in dotted.split("."))


def _env_hint(var: str, settings: Settings) -> str:
    """` (did you mean HARKEN_X?)` for an ignored variable close to a real one, else ''."""
    known = [DATA_DIR_ENV_VAR, *(f"HARKEN_{key.replace('.', '_')}".upper() for key in RULES)]
    known += SECTION_SECRETS.values()
    for name, settings_for in settings.inputs.items():
        declared = settings_for.spec.secrets if settings_for.spec else ()
        leaves = ["admins", *settings_for.options, *declared]
        known += [input_env_var(name, leaf) for leaf in leaves]
    match = difflib.get_close_matches(var, known, n=1, cutoff=0.8)
    return f" (did you mean {match[0]}?)" if match else ""
