"""Errors that stop Harken from starting, with a message that says what to change."""


class StartupError(RuntimeError):
    """The bot cannot start as configured; the message says what to change.

    The CLI prints the message as one line and exits 2, so it must name the setting or
    credential at fault and never contain a secret.
    """
