"""Who may use which command: admins, and the groups of `[access.commands]`.

Groups are defined per input (`[inputs.shell] groups = { ops = ["alice"] }`), because a
user id means something only on its input: `alice` in the shell and `alice` on XMPP are
two people. A command listed in `[access.commands]` is for the members of those groups
and the input's admins; a command not listed is open to everyone (unless it is declared
`admin_only`). The runner (`actors/runner.py`) applies this to every command and every
dialog turn before it runs anything.
"""

from __future__ import annotations

from actors.event import Event
from config.settings import Settings


def groups_of(settings: Settings, event: Event) -> list[str]:
    """The groups the person in `event` belongs to on their input."""
    input_settings = settings.inputs.get(event.input)
    if input_settings is None:
        return []
    return [name for name, users in input_settings.groups.items() if event.user in users]


def refusal(
    settings: Settings, command: str, admin_only: bool, event: Event, is_admin: bool
) -> tuple[str, str] | None:
    """Why this person may not use `command`: (a reason for the log, a reply for them),
    or None if they may."""
    if admin_only and not is_admin:
        return "admins only", (
            f"Sorry, `{command}` is for admins only, and you are not an admin on {event.input}."
        )
    allowed = settings.access.commands.get(command)
    if allowed is None or is_admin:
        return None
    if set(allowed) & set(groups_of(settings, event)):
        return None
    names = ", ".join(allowed) or "none"
    return "not in an allowed group", (
        f"Sorry, `{command}` is only for the group(s) {names} and the admins, and you "
        f"({event.user} on {event.input}) are in none of them. An admin can add you to "
        f"`groups` in the [inputs.{event.input}] section of Harken's config."
    )
