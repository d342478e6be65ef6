"""The base of every Harken actor: a pykka threading actor with a faster inbox.

pykka's default inbox is `queue.Queue`, written in Python with two condition variables;
`queue.SimpleQueue` is implemented in C and does everything pykka asks of an inbox
(`put`, blocking `get`, `empty`). Every message between Harken's actors passes through
an inbox, several per chat message, so this is the cheapest place to save time.
"""

from __future__ import annotations

import queue
from typing import Any

import pykka


class Actor(pykka.ThreadingActor):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()
