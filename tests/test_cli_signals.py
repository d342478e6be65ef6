"""`harken run` stops on SIGTERM even when the kernel hands the signal to another thread.

A process-directed signal may be delivered to any of Harken's threads; Python runs the
handler on the main thread only once that thread runs again. The main thread waits for
the stop in short steps, so it always does.
"""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = r"""
import signal, sys, threading
from harken.cli import _Signals

signals = _Signals(hangup_stops=False)
main = threading.main_thread().ident

def send_to_this_thread_once_main_waits():
    while True:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_name == "wait_for_stop":
            break
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=send_to_this_thread_once_main_waits).start()
signals.wait_for_stop(logs=None)
print("stopped")
"""


def test_a_sigterm_delivered_to_another_thread_stops_the_wait() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
