"""Child process for tests/test_memory_durability.py: write through a MemoryActor forever.

Usage: python memory_writer.py STORE_DIR FIRST_N CHECKPOINT_BYTES [PAUSE_AT]

For n = FIRST_N, FIRST_N + 1, ... it tells the actor, in order:

* `MemoryPut("user", owner(n), f"k{n}", value(n))`;
* every 5th n, `MemoryPut("user", owner(n), "latest", n)` (an overwrite);
* every 7th n, `MemoryDelete("user", owner(n), f"k{n - 7}")` (same owner as k{n-7});
* `MemoryBarrier`, whose notification makes the main thread print `acked <n>`.

So `acked <n>` promises that every write for every m <= n is durable. At most WINDOW
barriers are outstanding, so writes are pipelined and commits batch several of them.
The parent kills this process with SIGKILL whenever it likes. The functions that
describe the writes are imported by the parent, so both sides agree on them.

With PAUSE_AT (one of PAUSE_POINTS), the first checkpoint that runs on the store's
writer thread stops for good at that point and the child prints `paused <PAUSE_AT>`;
the memory actor carries on acknowledging writes, so the parent can kill the process
at a known moment of a background checkpoint with writes acknowledged since.
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

OWNERS = 7 * 5  # a multiple of 7 keeps k{n-7} with the same owner as k{n}
WINDOW = 32


def owner(n: int) -> str:
    return f"owner-{n % OWNERS}"


def value(n: int) -> dict[str, Any]:
    return {"n": n, "pad": "x" * (n % 97)}


PAUSE_POINTS = (
    "before-files",  # nothing written yet
    "first-rename",  # every temporary file written and synced, none renamed
    "mid-rename",  # some owner files replaced, some not
    "before-segments",  # owner files durable, sealed segments not yet deleted
    "after-segments",  # sealed segments deleted, the store not yet told
)


def pause_checkpoint_at(point: str, say: Callable[[str], None]) -> None:
    """Make the first background checkpoint stop forever at `point` (see PAUSE_POINTS)."""
    import os

    from memory.checkpoint import WRITER_THREAD_NAME, CheckpointWriter

    forever = threading.Event()

    def stop_here(here: str) -> None:
        # Only the writer thread stops (the checkpoint that opening makes runs on the
        # actor's), and the first stop is the last: no other checkpoint starts after.
        if here == point and threading.current_thread().name == WRITER_THREAD_NAME:
            say(f"paused {point}")
            forever.wait()

    write_owner_files = CheckpointWriter.write_owner_files
    delete_segments = CheckpointWriter.delete_segments
    replace = os.replace
    renames = 0

    def write_owner_files_wrapper(self: CheckpointWriter, *args: Any) -> None:
        stop_here("before-files")
        write_owner_files(self, *args)

    def delete_segments_wrapper(self: CheckpointWriter, *args: Any) -> None:
        stop_here("before-segments")
        delete_segments(self, *args)
        stop_here("after-segments")

    def replace_wrapper(src: str, dst: str) -> None:
        nonlocal renames
        if threading.current_thread().name == WRITER_THREAD_NAME:
            renames += 1
            stop_here("first-rename" if renames == 1 else "mid-rename" if renames == 5 else "")
        replace(src, dst)

    CheckpointWriter.write_owner_files = write_owner_files_wrapper  # type: ignore[method-assign,assignment]
    CheckpointWriter.delete_segments = delete_segments_wrapper  # type: ignore[method-assign,assignment]
    os.replace = replace_wrapper  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    from actors.memory_actor import MemoryActor
    from actors.messages import MemoryBarrier, MemoryDelete, MemoryPut
    from memory.tinydb_store import TinyDBStore

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    directory, first, checkpoint_bytes = argv[0], int(argv[1]), int(argv[2])
    # Lines to print, or (n, error) when the barrier after write n fires: one thread
    # prints them all, so that lines never interleave.
    acks: queue.Queue[tuple[int, BaseException | None] | str] = queue.Queue()
    if len(argv) > 3:
        pause_checkpoint_at(argv[3], acks.put)
    ref = MemoryActor.start(lambda: TinyDBStore(directory, checkpoint_bytes=checkpoint_bytes))
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
        item = acks.get()
        if isinstance(item, str):
            print(item, flush=True)
            continue
        n, error = item
        if error is not None:
            print(f"error {n} {error!r}", flush=True)
            return 1
        print(f"acked {n}", flush=True)
        window.release()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
