"""One person across inputs: `link`, `unlink` and `reminders go to` (`whoami` shows them).

`link xmpp bob@example.org`, said on Slack, sends a one-time code to that XMPP account
and asks for it back here: whoever says it controls both accounts, which then share
memory, profile and reminders (the memory actor keeps the map; ARCHITECTURE.md,
"Identity"). A code is 6 digits from `secrets`, good for 10 minutes and 5 tries, used
once, compared in constant time, and never stored on disk or logged. Few are sent:
`[identity] link_codes_per_person` and `link_codes_per_account` (3 an hour each), so
nobody can make the bot send codes to someone else over and over.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping

from commands.base import command
from commands.dialogs import Answers, Ask, Invalid, dialog
from core.context import (
    MAX_KEY_CHARS,
    REMINDERS_TO,
    Context,
    SendRefused,
    TooManyLinkCodes,
    owner_of,
)

CODE_SECONDS = 600
CODE_TRIES = 5
_USAGE = "Say `link <input> <your id there>`, e.g. `link xmpp alice@example.org`."
_HERE = ("here", "where i asked", "where i ask")


def _send_code(ctx: Context, groups: Mapping[str, str | None]) -> Answers:
    """Start of `link`: send a code to the other account, remember it, ask for it."""
    name, user = groups.get("input"), groups.get("user")
    if not name or not user:
        raise Invalid(_USAGE)
    account = f"{name}:{user}"
    if account == owner_of(ctx.event):
        raise Invalid("That is the account you are talking to me from.")
    if len(account) > MAX_KEY_CHARS:
        raise Invalid(f"That id is too long to link (at most {MAX_KEY_CHARS} characters).")
    if account in ctx.identity.accounts():
        raise Invalid(f"{user} on {name} is already linked with you. Say `whoami` to see.")
    code = f"{secrets.randbelow(10**6):06d}"
    try:
        ctx.identity.offer_link(account, code, time.time() + CODE_SECONDS, CODE_TRIES)
    except TooManyLinkCodes as exc:
        raise Invalid(_too_many(exc, name, user)) from exc
    text = (
        f"{ctx.user} on {ctx.event.input} asked me to link this account with theirs. "
        f"If that was you, say this code there: {code} (valid for 10 minutes). "
        "If it was not you, ignore this message."
    )
    try:
        ctx.send(input=name, to=user, text=text, subject="Your Harken link code")
    except SendRefused as exc:
        ctx.identity.withdraw_link()  # nobody got it: it does not count
        raise Invalid(f"I could not send a code to {user} on {name}: {exc}.") from exc
    return {"input": name, "user": user}


def _too_many(refused: TooManyLinkCodes, name: str, user: str) -> str:
    within, wait = _duration(refused.window_seconds), _duration(refused.wait_seconds)
    codes = f"{refused.most} link code{'' if refused.most == 1 else 's'} within {within}"
    if refused.to_account:
        return (
            f"{user} on {name} was sent {codes}, the most I send to one account. "
            f"You can ask again in {wait}."
        )
    return (
        f"You asked for {codes}, the most I send for one person. You can ask for another in {wait}."
    )


def _duration(seconds: float) -> str:
    """`1 minute`, `43 minutes`, `1 hour`, `2 hours 5 minutes`: rounded up to a minute."""
    hours, minutes = divmod(max(1, math.ceil(seconds / 60)), 60)
    parts = [(hours, "hour"), (minutes, "minute")]
    return " ".join(f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n)


@dialog(
    r"^link(?:\s+(?P<input>\S+)(?:\s+(?P<user>\S+))?)?$",
    usage="link <input> <your id there>",
    description="Link your account on another input with this one: one person, one "
    "memory (I send a code there; you say it here).",
    steps=[
        Ask(
            "code",
            lambda a: f"Say the code I sent you on {a['input']} (to {a['user']}).",
            max_chars=20,
        )
    ],
    timeout_seconds=CODE_SECONDS,
    start=_send_code,
)
def link(ctx: Context, answers: Answers) -> str:
    outcome = ctx.identity.confirm_link(str(answers["code"]))
    again = f"Say `link {answers['input']} {answers['user']}` for a new code."
    match outcome.outcome:
        case "linked":
            lines = [
                f"Linked: you and {answers['user']} on {answers['input']} are one person "
                f"now ({ctx.identity.owner}), with one memory and one list of reminders."
            ]
            if outcome.conflicts:
                lines.append(
                    "Both accounts had "
                    + ", ".join(f"`{c}`" for c in outcome.conflicts)
                    + f": I kept the values from this account ({ctx.event.input})."
                )
            return "\n".join(lines)
        case "wrong":
            tries = "1 try" if outcome.tries_left == 1 else f"{outcome.tries_left} tries"
            raise Invalid(f"That is not the code ({tries} left).")
        case "expired":
            return f"That code has expired. {again}"
        case "spent":
            return f"That was the last try: the code is void. {again}"
    return f"No code is waiting for you (I may have restarted). {again}"


@command(
    r"^unlink(?:\s+(?P<input>\S+)\s+(?P<user>\S+))?$",
    usage="unlink [<input> <id>]",
    description="Split an account (this one if none is named) off the others linked "
    "with it; it keeps a copy of your memory.",
)
def unlink(ctx: Context, input: str | None, user: str | None) -> str:
    account = f"{input}:{user}" if input and user else owner_of(ctx.event)
    if not ctx.identity.unlink(account):
        return f"{account} is not linked with you. Say `whoami` to see your accounts."
    return (
        f"Unlinked {account}: it keeps a copy of your memory and profile, and goes on "
        "on its own from now on."
    )


@command(
    r"^reminders\s+go\s+to\s+(?P<where>.+)$",
    usage="reminders go to <here | last active | input>",
    description="Where your reminders reach you, once you linked accounts: where you set "
    "each (here), where you last spoke to me, or on one of your linked accounts' inputs.",
)
def reminders_go_to(ctx: Context, where: str) -> str:
    wanted = " ".join(where.lower().split())
    if wanted in _HERE:
        ctx.profile.set(REMINDERS_TO, "here")
        return "OK: each reminder reaches you where you set it."
    accounts = ctx.identity.accounts()
    if len(accounts) < 2:
        return (
            "Your reminders reach you where you set them: you have no other account "
            "linked. Say `link <input> <your id there>` first."
        )
    if wanted == "last active":
        ctx.profile.set(REMINDERS_TO, wanted)
        return "OK: reminders reach you where you last spoke to me."
    inputs = sorted({a.partition(":")[0] for a in accounts})
    if wanted not in inputs:
        return (
            f"You have no account on {wanted} linked with this one (yours: "
            f"{', '.join(inputs)}). Say `link {wanted} <your id there>` first."
        )
    ctx.profile.set(REMINDERS_TO, wanted)
    return f"OK: reminders reach you on {wanted}."
