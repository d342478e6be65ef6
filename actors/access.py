"""Who may use which command: admins, and the groups of `[access.commands]`.

Groups are defined per input, because a user id means something only on its input.
A command listed in `[access.commands]` is for the members of those groups and the
input's admins; one not listed is open to everyone unless it is `admin_only`. The
command actor applies `authorize` to every turn of its command, so one decision covers
every way in; `harken.testing.call` applies the same `refusal`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from actors.metrics import Metrics
from config.settings import Settings
from core.event import Event

logger = logging.getLogger(__name__)


def groups_of(
    settings: Settings, event: Event, linked: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """The groups the person in `event` belongs to on their input, and with `linked`
    ((input, user) of their other accounts, when `[identity] share_groups`) on those."""
    found: list[str] = []
    for name, user in ((event.input, event.user), *linked):
        input_settings = settings.inputs.get(name)
        if input_settings is not None:
            found += [group for group, users in input_settings.groups.items() if user in users]
    return found


def refusal(
    settings: Settings,
    name: str,
    *,
    admin_only: bool,
    event: Event,
    is_admin: bool,
    linked: Sequence[tuple[str, str]] = (),
) -> tuple[str, str] | None:
    """Why this person may not run command or dialog `name`: (a reason for the log, a
    reply for them), or None if they may."""
    if admin_only and not is_admin:
        return "admins only", (
            f"Sorry, `{name}` is for admins only, and you are not an admin on {event.input}."
        )
    allowed = settings.access.commands.get(name)
    if allowed is None or is_admin:
        return None
    if set(allowed) & set(groups_of(settings, event, linked)):
        return None
    names = ", ".join(allowed) or "none"
    return "not in an allowed group", (
        f"Sorry, `{name}` is only for the group(s) {names} and the admins, and you "
        f"({event.user} on {event.input}) are in none of them. An admin can add you to "
        f"`groups` in the [inputs.{event.input}] section of Harken's config."
    )


def authorize(
    settings: Settings,
    metrics: Metrics,
    name: str,
    *,
    admin_only: bool,
    event: Event,
    is_admin: bool,
    linked: Sequence[tuple[str, str]] = (),
) -> str | None:
    """Why this person may not run command or dialog `name` (a reply for them; the
    refusal is logged and counted), or None if they may."""
    refused = refusal(
        settings, name, admin_only=admin_only, event=event, is_admin=is_admin, linked=linked
    )
    if refused is None:
        return None
    reason, text = refused
    metrics.refused(name)
    logger.warning("refused %s for %s on %s: %s", name, event.user, event.input, reason)
    return text
