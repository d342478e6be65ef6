"""Harken's configuration: the settings schema, the loader and the shipped default file.

`load_settings()` reads the shipped `config/harken.toml` (or a file given with
`--config`), applies `HARKEN_*` environment variables and command-line overrides, and
returns frozen `Settings`; any problem is one `ConfigError` line. `render_settings()`
shows the effective settings with secrets masked, for `harken check`; `config.validate`
checks what the settings need beyond valid values (installed inputs, secrets, commands
named in access rules, a writable data directory). What an input accepts is declared by
the input itself (`config.inputs`), so an input from another package needs no change here.
"""

from config.inputs import InputSpec
from config.loader import load_settings
from config.render import render_settings
from config.rules import ConfigError
from config.settings import (
    BotSettings,
    InputSettings,
    LogSettings,
    MemorySettings,
    SchedulerSettings,
    Secret,
    Settings,
)

__all__ = [
    "BotSettings",
    "ConfigError",
    "InputSettings",
    "InputSpec",
    "LogSettings",
    "MemorySettings",
    "SchedulerSettings",
    "Secret",
    "Settings",
    "load_settings",
    "render_settings",
]
