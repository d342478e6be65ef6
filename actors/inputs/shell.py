"""The terminal shell input: chat with Harken in a terminal, or feed it a script.

At a terminal it is an interactive chat with line editing and history (readline). When
standard input is a pipe or a file it prints every reply and returns once the last
line is answered (plus `linger` seconds, for scheduled messages), so
`printf 'ping\\n' | harken shell` works in scripts. The actor prints replies; the
session on the main thread reads lines; they share the `Outstanding` set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from actors.inputs.base import InputActor, Outstanding
from actors.messages import Inbound
from actors.text import clean_text
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

PROMPT = "you> "
INTERACTIVE_WAIT = 3.0
"""How long the prompt waits for a reply before letting you type on (slow commands)."""
QUIT_WORDS = frozenset({"quit", "exit", "/quit", "/exit"})


class ShellInput(InputActor):
    def __init__(
        self,
        settings: InputSettings,
        runtime: Runtime,
        router: Handle,
        *,
        out: TextIO,
        outstanding: Outstanding,
        interactive: bool,
    ) -> None:
        super().__init__(settings, runtime, router)
        self.out = out
        self.outstanding = outstanding
        self.interactive = interactive
        self.lock = threading.Lock()

    def send(self, event: Event) -> None:
        text = clean_text(event.data)
        if event.type is EventType.ERROR and self.interactive:
            text = f"! {text}"
        with self.lock:
            if self.interactive:
                self._print_over_prompt(text)
            else:
                self.out.write(text + "\n")
                self.out.flush()

    def _print_over_prompt(self, text: str) -> None:
        # A reply can arrive while the person is typing: clear the prompt line, print the
        # reply, then draw the prompt and what they had typed so far again.
        typed = ""
        with contextlib.suppress(ImportError):
            import readline

            typed = readline.get_line_buffer()
        self.out.write("\r\x1b[K" + text + "\n")
        if self.prompt_shown:
            self.out.write(PROMPT + typed)
        self.out.flush()

    prompt_shown = False
    """True while the session shows a prompt (set by the session thread)."""

    def processed(self, event_id: str) -> None:
        self.outstanding.done(event_id)


def _history_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "harken" / "shell_history"


class ShellSession:
    """Reads what the person types (or a script) and hands each line to the bot."""

    def __init__(
        self, router: Handle, outstanding: Outstanding, *, user: str, input_name: str = "shell"
    ) -> None:
        self.router = router
        self.outstanding = outstanding
        self.user = user
        self.input_name = input_name
        self.actor: ShellInput | None = None

    def submit(self, text: str) -> None:
        event = Event(
            type=EventType.TEXT,
            sender=self.user,
            to="harken",
            data=text,
            input=self.input_name,
            display_name=self.user,
        )
        self.outstanding.add(event.id)
        self.router.tell(Inbound(event))

    def run_script(
        self, stream: BinaryIO, *, linger: float = 0.0, reply_timeout: float = 60.0
    ) -> int:
        """Send every line of `stream`; return 0 once all replies are out, 1 on a timeout."""
        for line in _lines(stream):
            if line.strip():
                self.submit(line)
        if not self.outstanding.wait_empty(reply_timeout):
            print(
                f"harken: {len(self.outstanding)} message(s) got no complete answer within "
                f"{reply_timeout:g} s",
                file=sys.stderr,
            )
            return 1
        if linger > 0:
            time.sleep(linger)  # the person asked to keep listening this long
        return 0

    def run_interactive(self, out: TextIO) -> int:
        history = _setup_readline()
        out.write(
            f"Harken is listening. You are {self.user}. Say `help` to see what I can do; "
            "`quit` or Ctrl-D to leave.\n"
        )
        out.flush()
        try:
            while True:
                if self.actor is not None:
                    self.actor.prompt_shown = True
                try:
                    line = input(PROMPT)
                except EOFError:
                    out.write("\n")
                    break
                finally:
                    if self.actor is not None:
                        self.actor.prompt_shown = False
                if line.strip().lower() in QUIT_WORDS:
                    break
                if line.strip():
                    self.submit(line)
                    self.outstanding.wait_empty(INTERACTIVE_WAIT)
        except KeyboardInterrupt:
            out.write("\n")
        finally:
            _save_history(history)
        return 0


def _lines(stream: BinaryIO) -> Iterator[str]:
    # Bytes in, decoded leniently: invalid UTF-8 becomes U+FFFD rather than an error.
    for raw in stream:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _setup_readline() -> Path | None:
    try:
        import readline
    except ImportError:
        return None
    path = _history_file()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)
    return path


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    import readline

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError as exc:
        logger.debug("could not save shell history to %s: %s", path, exc)
