"""The email input's outbox: mails waiting for the server, one file each, bounded.

A mail is on disk (temporary file, fsync, rename, fsync of the folder) before the
command that asked hears of it, and its file is removed once the server took or refused
it for good, so a mail waiting at a stop (or crash) is sent after the next start. The
folder is readable by Harken's user only. A file that cannot be read is never taken for
"no mail": it is moved into `damaged/` and named in an ERROR log line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from actors.inputs.email_message import Mail
from config.settings import Settings

__all__ = ["Outbox", "OutboxFull", "outbox_path"]

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"


def outbox_path(settings: Settings, input_name: str) -> Path:
    """The outbox folder of input `input_name`: beside the memory store, like the job
    store (`<bot.data_dir>/email-outbox` with the default `memory.path`)."""
    memory = os.path.normpath(settings.memory.path)
    return Path(os.path.dirname(memory)) / f"{input_name}-outbox"


class OutboxFull(Exception):
    """The outbox holds `limit` mails already; the new one was not stored."""


class Outbox:
    """The mails waiting, in the order they were queued (thread-safe)."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._mails: dict[str, Mail] = {}
        for file in sorted(path.iterdir()):
            if file.name.endswith(_TEMP_SUFFIX):
                # A write cut short by a crash: nobody was told this mail was queued.
                file.unlink(missing_ok=True)
            elif file.name.endswith(_SUFFIX) and file.is_file():
                mail = self._read(file)
                if mail is not None:
                    self._mails[mail.id] = mail

    def _read(self, file: Path) -> Mail | None:
        try:
            mail = Mail.from_json(json.loads(file.read_text(encoding="utf-8")))
            if mail.id != file.name.removesuffix(_SUFFIX):
                raise ValueError(f"its id {mail.id!r} is not its name")
            return mail
        except (OSError, ValueError) as exc:
            damaged = self.path / "damaged"
            moved = damaged / f"{file.name}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            try:
                damaged.mkdir(mode=0o700, exist_ok=True)
                file.rename(moved)
            except OSError as move_error:
                logger.error(
                    "email: cannot read the queued mail %s (%s), nor move it aside (%s); "
                    "it is not sent",
                    file,
                    exc,
                    move_error,
                )
            else:
                logger.error(
                    "email: cannot read the queued mail %s (%s); moved it to %s, not sent",
                    file,
                    exc,
                    moved,
                )
            return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._mails)

    def pending(self) -> list[Mail]:
        """The mails waiting, oldest first."""
        with self._lock:
            return [self._mails[key] for key in sorted(self._mails)]

    def __contains__(self, mail_id: object) -> bool:
        with self._lock:
            return mail_id in self._mails

    def add(self, mail: Mail) -> None:
        """Store `mail` durably; raises `OutboxFull` or `OSError`, storing nothing."""
        with self._lock:
            if len(self._mails) >= self.limit:
                raise OutboxFull(f"{len(self._mails)} mails are waiting already")
            final = self.path / f"{mail.id}{_SUFFIX}"
            temp = self.path / f"{mail.id}{_TEMP_SUFFIX}"
            data = json.dumps(mail.to_json(), ensure_ascii=False).encode("utf-8")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.rename(temp, final)
                self._sync_folder()
            except OSError:
                temp.unlink(missing_ok=True)
                raise
            self._mails[mail.id] = mail

    def remove(self, mail_id: str) -> None:
        """Forget a mail the server took or refused for good."""
        with self._lock:
            self._mails.pop(mail_id, None)
            try:
                (self.path / f"{mail_id}{_SUFFIX}").unlink(missing_ok=True)
                self._sync_folder()
            except OSError as exc:
                logger.error(
                    "email: cannot remove the sent mail %s from %s (%s); it may be sent "
                    "again after a restart",
                    mail_id,
                    self.path,
                    exc,
                )

    def _sync_folder(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
