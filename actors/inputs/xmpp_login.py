"""Logging in to XMPP: the client set up for the account, and the start-up login check.

`check_login` connects once, logs in and leaves, so that a wrong password or a server
that allows no login method stops Harken at start-up instead of leaving the input
retrying for ever. The long-lived connection (`XmppClient`) builds its slixmpp client
with the same `new_client` and words its login failures with the same `refused` and
`untrusted`, so both say the same thing. Importing this module also keeps SASL
exchanges, which carry the password, out of slixmpp's debug log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slixmpp import ClientXMPP

from actors.inputs.base import close_loop
from actors.inputs.xmpp_options import XmppOptions

# The connection's logger name, so that log filters on it keep covering the login check.
logger = logging.getLogger("actors.inputs.xmpp_client")

STOP_WAIT = 2.0
"""Seconds to wait for the server to close the stream when Harken stops."""
CHECK_TIMEOUT = 15.0
"""Seconds the start-up login check (`check_login`) may take in all."""


class _HideSaslPayloads(logging.Filter):
    """Keep login exchanges out of slixmpp's debug log.

    At DEBUG level slixmpp logs every stanza it sends and receives, SASL ones included,
    and a PLAIN `<auth>` carries the password in base64: readable by anyone with the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "urn:ietf:params:xml:ns:xmpp-sasl" in text and (
            "<auth" in text or "<response" in text or "<challenge" in text
        ):
            record.msg, record.args = text.split(":", 1)[0] + ": <SASL exchange hidden>", ()
        return True


_SASL_FILTER = _HideSaslPayloads()
for _name in ("slixmpp.xmlstream.xmlstream", "slixmpp.basexmpp"):
    if _SASL_FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_SASL_FILTER)


def new_client(options: XmppOptions, loop: asyncio.AbstractEventLoop) -> ClientXMPP:
    """A slixmpp client for the account, with the transport and login the options ask."""
    plugin_config: dict[str, Any] = {}
    if options.allow_plaintext:
        plugin_config["feature_mechanisms"] = {
            "unencrypted_plain": True,
            "unencrypted_scram": True,
        }
    xmpp = ClientXMPP(
        options.jid, options.password.reveal(), plugin_config=plugin_config, loop=loop
    )
    xmpp.enable_plaintext = options.allow_plaintext
    xmpp.enable_direct_tls = options.direct_tls
    xmpp.enable_starttls = not options.direct_tls
    if options.ca_file:
        xmpp.ca_certs = Path(options.ca_file)
    return xmpp


def untrusted(error: Any) -> str:
    return (
        f"the server's TLS certificate is not trusted ({error}); for a private CA, "
        "set inputs.xmpp.ca_file"
    )


def refused(options: XmppOptions, condition: str) -> str:
    """Why a login will never succeed: a refused password, or no usable login method."""
    if condition:
        return (
            f"the server refused the login of {options.jid} ({condition}): check "
            "inputs.xmpp.jid and HARKEN_XMPP_PASSWORD"
        )
    return (
        f"{options.server} offers no login method this connection may use for "
        f"{options.jid} (it offers no TLS, and plaintext login is off; "
        "inputs.xmpp.allow_plaintext = true is only for a test server on loopback)"
    )


@dataclass(frozen=True)
class LoginCheck:
    """What the start-up login check found.

    `accepted`: the server let the account log in. `refused`: it never will (a wrong
    password, an unknown account, no login method allowed); `detail` says why. Neither:
    the check could not tell (the server is unreachable, slow, or its certificate is
    not trusted); `detail` says why, and the input retries as usual.
    """

    accepted: bool
    refused: bool
    detail: str


def check_login(options: XmppOptions, timeout: float = CHECK_TIMEOUT) -> LoginCheck:
    """Connect, log in and leave again, within `timeout` seconds (blocks the caller).

    Runs on a thread and an event loop of its own, so it works whatever the caller's
    thread is doing. The password is only ever handed to slixmpp.
    """
    found: list[LoginCheck] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            found.append(loop.run_until_complete(_check_login(options, loop, timeout)))
        except Exception as exc:
            logger.debug("XMPP: the login check failed", exc_info=True)
            found.append(LoginCheck(False, False, f"the check failed: {exc}"))
        finally:
            close_loop(loop)

    thread = threading.Thread(target=run, name=f"xmpp-check:{options.bare_jid}", daemon=True)
    thread.start()
    thread.join(timeout + STOP_WAIT + 5.0)
    if not found:
        return LoginCheck(False, False, f"no answer within {timeout:.0f} s")
    return found[0]


async def _check_login(
    options: XmppOptions, loop: asyncio.AbstractEventLoop, timeout: float
) -> LoginCheck:
    xmpp = new_client(options, loop)
    outcome: asyncio.Future[LoginCheck] = loop.create_future()
    condition = [""]

    def finish(accepted: bool, refused: bool, detail: str) -> None:
        if not outcome.done():
            outcome.set_result(LoginCheck(accepted, refused, detail))

    def failed_all_auth(_: Any) -> None:
        if condition[0] == "temporary-auth-failure":
            finish(False, False, "the server could not check the password just now")
        else:
            finish(False, True, refused(options, condition[0]))

    def on_untrusted(error: Any) -> None:
        finish(False, False, untrusted(error))
        xmpp.abort()

    def stream_error(error: Any) -> None:
        found = error["condition"] if hasattr(error, "__getitem__") else error
        finish(False, False, f"stream error from the server: {found}")

    xmpp.add_event_handler("session_start", lambda _: finish(True, False, ""))
    xmpp.add_event_handler(
        "failed_auth", lambda failure: condition.__setitem__(0, str(failure["condition"]))
    )
    xmpp.add_event_handler("failed_all_auth", failed_all_auth)
    xmpp.add_event_handler("ssl_invalid_chain", on_untrusted)
    xmpp.add_event_handler("stream_error", stream_error)
    last_error = ["no address answered"]
    xmpp.add_event_handler("connection_failed", lambda error: last_error.__setitem__(0, str(error)))
    xmpp.add_event_handler(
        "disconnected",
        lambda reason: finish(False, False, str(reason or "the server closed the connection")),
    )
    deadline = loop.time() + timeout
    host = options.host or None
    try:
        retry = await asyncio.wait_for(xmpp.connect(host, options.port if host else None), timeout)
        if retry is not None:  # no address answered; slixmpp scheduled a retry
            xmpp.cancel_connection_attempt()
            finish(False, False, last_error[0])
        return await asyncio.wait_for(asyncio.shield(outcome), deadline - loop.time())
    except TimeoutError:
        return LoginCheck(False, False, f"no login within {timeout:.0f} s")
    finally:
        xmpp.cancel_connection_attempt()
        if xmpp.is_connected():
            with contextlib.suppress(Exception):
                await xmpp.disconnect(wait=STOP_WAIT, reason="Harken checked its login")
