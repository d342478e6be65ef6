"""The Slack input's settings, checked once: `[inputs.slack]` and its two tokens.

`SlackOptions` is also the input's declaration (the `harken.input_options` entry point):
the config loader reads its fields for the defaults, the types and the secrets, so this
module must stay light (no slack-sdk), as `harken check` imports it. What makes a value
valid beyond its type (a positive rate, an http(s) URL, a token of the right kind) is
checked here, so that `harken run --inputs slack` stops with one line naming the key or
the variable instead of failing later on the input's loop thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.errors import StartupError
from config.inputs import input_env_var
from config.settings import InputSettings, Secret

DEFAULT_API_URL = "https://slack.com/api/"

_KIND_NAMES: Mapping[type[Any], str] = {
    str: "a string",
    float: "a number",
    int: "an integer",
    bool: "true or false",
}


@dataclass(frozen=True, kw_only=True)
class SlackOptions:
    """`[inputs.slack]` options and the two tokens, checked."""

    api_url: str = DEFAULT_API_URL
    """Web API base URL; tests point it at a local fake Slack."""
    prefix: str = "!"
    """In channels, a message starting with this is for the bot ("" turns it off)."""
    replies_per_second: float = 1.0
    """Replies per channel: sustained rate (Slack allows about one a second per channel)."""
    reply_burst: int = 4
    """Replies per channel sent at once before the rate applies."""
    ping_interval: float = 5.0
    """Seconds between websocket pings; a dead connection is noticed within a few."""
    ephemeral_errors: bool = True
    """Errors that concern only the asker (a refusal, a failed command) are shown to
    them alone in a channel (`chat.postEphemeral`); in a DM they are ordinary replies."""
    bot_token: Secret = field(metadata={"secret": True, "required": True})
    """The Bot User OAuth Token (`xoxb-...`), from `HARKEN_SLACK_BOT_TOKEN`."""
    app_token: Secret = field(metadata={"secret": True, "required": True})
    """The App-Level Token for Socket Mode (`xapp-...`), from `HARKEN_SLACK_APP_TOKEN`."""

    @classmethod
    def of(cls, settings: InputSettings) -> SlackOptions:
        """Check the options, then the tokens; `StartupError` names the first at fault."""
        options = settings.options
        where = f"inputs.{settings.name}"

        def get(key: str, kind: type[Any], default: Any) -> Any:
            value = options.get(key, default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
                raise StartupError(f"{where}.{key}: must be {_KIND_NAMES[kind]} (got {value!r})")
            return value

        api_url = get("api_url", str, cls.api_url)
        if not api_url.startswith(("https://", "http://")):
            raise StartupError(f"{where}.api_url: must be an http(s) URL (got {api_url!r})")
        rate = get("replies_per_second", float, cls.replies_per_second)
        burst = get("reply_burst", int, cls.reply_burst)
        ping = get("ping_interval", float, cls.ping_interval)
        if not rate > 0:
            raise StartupError(f"{where}.replies_per_second: must be > 0 (got {rate})")
        if burst < 1:
            raise StartupError(f"{where}.reply_burst: must be >= 1 (got {burst})")
        if not ping > 0:
            raise StartupError(f"{where}.ping_interval: must be > 0 (got {ping})")
        bot_token, app_token = tokens(settings)
        return cls(
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            prefix=get("prefix", str, cls.prefix).strip(),
            replies_per_second=rate,
            reply_burst=burst,
            ping_interval=ping,
            ephemeral_errors=get("ephemeral_errors", bool, cls.ephemeral_errors),
            bot_token=Secret(bot_token),
            app_token=Secret(app_token),
        )


def tokens(settings: InputSettings) -> tuple[str, str]:
    """(bot token, app token), or a `StartupError` naming the variable at fault."""
    wanted = (
        ("bot_token", "xoxb-", "bot token", "Bot User OAuth Token"),
        ("app_token", "xapp-", "app-level token", "App-Level Token"),
    )
    found: list[str] = []
    for key, prefix, what, slack_name in wanted:
        var = input_env_var(settings.name, key)
        secret = settings.secrets.get(key)
        if secret is None:
            raise StartupError(
                f"slack: {var} is not set; give it your Slack app's {slack_name} ({prefix}...)"
            )
        value = secret.reveal().strip()
        if not value.startswith(prefix):
            raise StartupError(f"slack: {var} does not hold a {what} (it must start with {prefix})")
        found.append(value)
    return found[0], found[1]
