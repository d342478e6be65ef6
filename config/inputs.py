"""How an input declares its options and secrets, and how the loader finds the declarations.

Each input says what it can be configured with in a frozen dataclass of its own: each
option is a field with a default, whose type is what the loader accepts; field metadata
marks the rest: `{"secret": True}` a secret (read only from `HARKEN_<INPUT>_<NAME>`,
never shown), `{"path": True}` a file path (made absolute like the other paths),
`{"required": True}` an option or secret the input cannot start without (`harken check`
reports it when empty or unset). For example:

    @dataclass(frozen=True, kw_only=True)
    class ChatOptions:
        server: str = field(default="", metadata={"required": True})
        port: int = 6697
        ca_file: str = field(default="", metadata={"path": True})
        password: Secret = field(metadata={"secret": True, "required": True})

The loader type-checks `[inputs.<name>]`, maps `HARKEN_<INPUT>_<KEY>` onto it, resolves
its paths and masks its secrets from that declaration alone, so an input installed from
another package needs no change here.

Declarations are found through entry points, and only imported when asked for: first
`harken.input_options` (a light module holding just the dataclass, so that reading the
settings never imports a chat library), else the `options_class` attribute of the class
registered under `harken.inputs`. This package imports nothing of the bot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint, EntryPoints

    from config.settings import InputSettings, Secret

INPUTS_GROUP: Final = "harken.inputs"
"""Entry point group of the input classes (what `harken run` starts)."""
OPTIONS_GROUP: Final = "harken.input_options"
"""Entry point group of the inputs' option declarations (what the loader reads)."""


def is_secret_key(key: str) -> bool:
    """Whether an input option name denotes a secret.

    A naming rule rather than a list, so that a secret is refused in files, read from the
    environment and masked in output even for an input that is not installed here:
    `token`, `password`, `secret`, or a name ending in `_token`, `_password` or `_secret`
    (e.g. `signing_secret`). A declared secret must be named so, and an option must not.
    """
    key = key.lower()
    return key in {"token", "password", "passwd", "secret"} or key.endswith(
        ("_token", "_password", "_secret")
    )


def input_env_var(input_name: str, key: str) -> str:
    """The environment variable for an input key: `HARKEN_<INPUT>_<KEY>`, upper case."""
    return f"HARKEN_{input_name}_{key}".upper()


def _frozen(value: Any) -> Any:
    # A default from a default_factory may be a list or a dict: every load shares it.
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


@dataclass(frozen=True)
class InputSpec:
    """What one input declares, as the loader uses it."""

    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Option name -> default; the default's type is what a value must have."""
    secrets: tuple[str, ...] = ()
    """Names of its secrets, each read from `HARKEN_<INPUT>_<NAME>`."""
    required: tuple[str, ...] = ()
    """Options and secrets it cannot start without."""
    paths: tuple[str, ...] = ()
    """Options that are file paths."""

    def __post_init__(self) -> None:
        frozen = {name: _frozen(value) for name, value in self.defaults.items()}
        object.__setattr__(self, "defaults", MappingProxyType(frozen))
        for name in self.secrets:
            if not is_secret_key(name):
                raise ValueError(
                    f"secret {name!r} must be named like one (token, password, secret, or "
                    "ending in _token, _password or _secret)"
                )
        for name in self.defaults:
            if is_secret_key(name):
                raise ValueError(f"option {name!r} is named like a secret: declare it a secret")
        for name in (*self.paths, *self.required):
            if name not in self.defaults and name not in self.secrets:
                raise ValueError(f"{name!r} is marked but not declared")

    @classmethod
    def of(cls, declaration: object) -> InputSpec:
        """The spec of a declaration: a dataclass (see the module docstring) or a spec."""
        if isinstance(declaration, InputSpec):
            return declaration
        if not (isinstance(declaration, type) and dataclasses.is_dataclass(declaration)):
            raise TypeError(f"{declaration!r} is not a dataclass")
        defaults: dict[str, Any] = {}
        secrets, required, paths = [], [], []
        for f in dataclasses.fields(declaration):
            if not f.init:
                continue
            if f.metadata.get("secret"):
                secrets.append(f.name)
            elif f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
            else:
                raise ValueError(f"option {f.name!r} has no default")
            if f.metadata.get("required"):
                required.append(f.name)
            if f.metadata.get("path"):
                paths.append(f.name)
        return cls(defaults, tuple(secrets), tuple(required), tuple(paths))


class OptionReader:
    """An input's options as set (over its declaration's defaults), with the checks that
    several inputs share, for the input's own `from_settings`.

    Each failure raises `error` with one line naming the key: the input passes its own
    exception class (`StartupError`), as this package imports nothing of the bot.
    """

    def __init__(
        self, declaration: object, settings: InputSettings, error: Callable[[str], Exception]
    ) -> None:
        self.name = settings.name
        self.raw: Mapping[str, Any] = {**InputSpec.of(declaration).defaults, **settings.options}
        self._secrets = settings.secrets
        self._error = error

    def __getitem__(self, leaf: str) -> Any:
        return self.raw[leaf]

    def key(self, leaf: str) -> str:
        return f"inputs.{self.name}.{leaf}"

    def fail(self, leaf: str, problem: str) -> Exception:
        """The error to raise for `leaf`: `inputs.<name>.<leaf>: <problem>`."""
        return self._error(f"{self.key(leaf)}: {problem}")

    def text(self, leaf: str) -> str:
        return str(self.raw[leaf]).strip()

    def required(self, leaf: str, need: str, example: str) -> str:
        """The option's text, which must not be empty; `need` says why it is needed."""
        value = self.text(leaf)
        if not value:
            key = self.key(leaf)
            raise self.fail(
                leaf, f"{need}, e.g. --set {key}={example} (or {input_env_var(self.name, leaf)})"
            )
        return value

    def port(self, leaf: str = "port") -> int:
        port = self.raw[leaf]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise self.fail(leaf, f"must be a port number 1-65535 (got {port!r})")
        return port

    def whole(self, leaf: str, least: int) -> int:
        """A whole number of at least `least`."""
        value = self.raw[leaf]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise self.fail(leaf, f"must be an integer >= {least} (got {value!r})")
        return value

    def positive(self, leaf: str) -> float:
        value = float(self.raw[leaf])
        if not value > 0:
            raise self.fail(leaf, f"must be > 0 (got {value})")
        return value

    def backoff(self, first: str, most: str) -> tuple[float, float]:
        """A backoff's first delay and its maximum (seconds): 0 < first <= most."""
        delay, max_delay = float(self.raw[first]), float(self.raw[most])
        if not 0 < delay <= max_delay:
            raise self.fail(first, f"must be > 0 and <= {most} (got {delay} and {max_delay})")
        return delay, max_delay

    def secret(self, leaf: str, need: str = "") -> Secret:
        """The secret (empty if unset); with `need` (why the input needs it), an unset or
        empty one is an error naming its environment variable."""
        from config.settings import Secret

        found = self._secrets.get(leaf) or Secret("")
        if need and not found.reveal():
            raise self._error(
                f"{input_env_var(self.name, leaf)} is not set: {need} in the environment"
            )
        return found


class DeclarationError(Exception):
    """An installed input whose declaration cannot be loaded or read; `str()` says why."""


def _group(group: str) -> EntryPoints:
    # Imported when first needed: importlib.metadata is slow to import, and `import
    # config` should not pay for it.
    from importlib.metadata import entry_points

    return entry_points(group=group)


def installed_inputs() -> list[str]:
    """Names of the inputs installed packages register under `harken.inputs`."""
    return sorted(_group(INPUTS_GROUP).names)


def _load(ep: EntryPoint, *, attribute: str | None = None) -> InputSpec | None:
    where = f"{ep.value} ({ep.group})"
    try:
        loaded = ep.load()
    except Exception as exc:
        raise DeclarationError(f"{where} failed to load: {exc}") from exc
    if attribute is not None:
        loaded = getattr(loaded, attribute, None)
        if loaded is None:
            return None
        where = f"{ep.value}.{attribute}"
    try:
        return InputSpec.of(loaded)
    except (TypeError, ValueError) as exc:
        raise DeclarationError(f"{where} does not declare options: {exc}") from exc


def _declaration(name: str, inputs: EntryPoints, options: EntryPoints) -> InputSpec | None:
    for ep in options.select(name=name):
        return _load(ep)
    for ep in inputs.select(name=name):
        return _load(ep, attribute="options_class")
    return None


def input_spec(name: str) -> InputSpec | None:
    """What the input `name` declares, or None if it declares nothing (or is unknown).

    Only that input's declaration is imported. Raises `DeclarationError` for one that is
    registered but cannot be loaded or is not a declaration.
    """
    return _declaration(name, _group(INPUTS_GROUP), _group(OPTIONS_GROUP))


def installed_specs() -> dict[str, InputSpec | DeclarationError | None]:
    """Each installed input, in name order, with its declaration (or why it has none)."""
    inputs, options = _group(INPUTS_GROUP), _group(OPTIONS_GROUP)
    found: dict[str, InputSpec | DeclarationError | None] = {}
    for name in sorted(inputs.names):
        try:
            found[name] = _declaration(name, inputs, options)
        except DeclarationError as exc:
            found[name] = exc
    return found
