"""Child process for tests/test_memory_durability.py: write through a MemoryActor forever.

Usage: python memory_writer.py STORE_DIR FIRST_N CHECKPOINT_BYTES

For n = FIRST_N, FIRST_N + 1, ... it tells the actor, in order:

* `MemoryPut("user", owner(n), f"k{n}", value(n))`;
* every 5th n, `MemoryPut("user", owner(n), "latest", n)` (an overwrite);
* every 7th n, `MemoryDelete("user", owner(n), f"k{n - 7}")` (same owner as k{n-7});
* `MemoryBarrier`, whose notification makes the main thread print `acked <n>`.

So `acked <n>` promises that every write for every m <= n is durable. At most WINDOW
barriers are outstanding, so writes are pipelined and commits batch several of them.
The parent kills this process with SIGKILL whenever it likes. The functions that
describe the writes are imported by the parent, so both sides agree on them.
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
from typing import Any

OWNERS = 7 * 5  # a multiple of 7 keeps k{n-7} with the same owner as k{n}
WINDOW = 32


def owner(n: int) -> str:
    return f"owner-{n % OWNERS}"


def value(n: int) -> dict[str, Any]:
    return {"n": n, "pad": "x" * (n % 97)}


def main(argv: list[str]) -> int:
    from actors.memory_actor import MemoryActor
    from actors.messages import MemoryBarrier, MemoryDelete, MemoryPut
    from memory.tinydb_store import TinyDBStore

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    directory, first, checkpoint_bytes = argv[0], int(argv[1]), int(argv[2])
    ref = MemoryActor.start(lambda: TinyDBStore(directory, checkpoint_bytes=checkpoint_bytes))
    acks: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()
    window = threading.Semaphore(WINDOW)

    def ack(n: int, error: BaseException | None) -> None:
        acks.put((n, error))

    def write_forever() -> None:
        n = first
        while True:
            window.acquire()
            ref.tell(MemoryPut("user", owner(n), f"k{n}", value(n)))
            if n % 5 == 0:
                ref.tell(MemoryPut("user", owner(n), "latest", n))
            if n % 7 == 0:
                ref.tell(MemoryDelete("user", owner(n), f"k{n - 7}"))
            ref.tell(MemoryBarrier(functools.partial(ack, n)))
            n += 1

    threading.Thread(target=write_forever, daemon=True).start()
    while True:
        n, error = acks.get()
        if error is not None:
            print(f"error {n} {error!r}", flush=True)
            return 1
        print(f"acked {n}", flush=True)
        window.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
