"""Logging for the `harken` command: where log lines go, in which format, at which levels.

* A log file is written through `WatchedFileHandler`, which notices when the file was
  renamed or removed (what logrotate does by default) and opens a new one by that name,
  so rotation needs no signal; SIGHUP makes it check at once (see harken/cli.py).
* `[log] format = "json"` writes one JSON object per line, for log shippers: `time`
  (UTC, ISO 8601), `level`, `logger`, `message`, and `exception` when there is one.
* `[log] levels` sets the level of single loggers. APScheduler's, which logs every job
  it adds and runs at INFO, is at WARNING unless it is listed there.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from config.settings import LogSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LOGGERS = {"apscheduler": "WARNING"}
"""Loggers whose INFO is chatter, and their level unless `[log] levels` names them."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in text are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


class Logs:
    """Harken's logging, once set up: where it goes, and reopening a rotated file."""

    def __init__(self, handler: logging.Handler, target: str) -> None:
        self.handler = handler
        self.target = target
        """The log file, or "stderr"."""

    def reopen(self) -> bool:
        """Open the log file anew if it was renamed or removed; False when logging to stderr."""
        handler = self.handler
        if not isinstance(handler, logging.handlers.WatchedFileHandler):
            return False
        handler.acquire()
        try:
            handler.reopenIfNeeded()
        finally:
            handler.release()
        return True


def setup_logging(settings: LogSettings, *, default_file: str = "") -> Logs:
    """Send the root logger's records where `settings` say (`default_file` when they name
    no file; stderr when neither does). Raises OSError if the file cannot be opened."""
    target = settings.file or default_file
    handler: logging.Handler
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    levels = dict(QUIET_LOGGERS)
    for item in settings.levels:
        name, _, level = item.partition("=")
        levels[name] = level
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    return Logs(handler, target or "stderr")
