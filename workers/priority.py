"""Background priority: run a job's read / compute phase at a lower CPU priority than the order stream.

The order job and the webhook intake are latency-critical; rules mining and count compaction are not, yet on a
2-core machine they compete for the same CPU (bench (d)). `niced(fn, *args)` runs `fn` in a thread of the job's
process whose nice value is raised by BACKGROUND_NICE, and returns its result (or raises its exception).

Why a thread and not os.nice() on the work horse: the jobs end with a short write transaction, and on SQLite the
write lock it holds stalls the order job and the intake (their writes wait for it). A niced process holding that
lock gets a tenth of a contended core and holds it ~10x longer: priority inversion. A process cannot lower its
nice value again without CAP_SYS_NICE, but on Linux every thread has its own nice value (setpriority on the
thread id), so the calling thread keeps its priority for the write phase while the read + compute phase, which
holds no write lock (a read transaction: a WAL snapshot on SQLite), runs niced. Elsewhere than Linux (no native
thread priorities) `niced` just calls `fn`.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

from shopify_app.config import env_number

log = logging.getLogger(__name__)

# Added to the job's nice value for its read / compute phase: 10 = CFS weight 110 vs 1024, ~10% of a core shared
# with one normal-priority task. 0 turns it off (deployment knob, environment).
BACKGROUND_NICE = env_number("BACKGROUND_NICE", 10, minimum=0, maximum=19)


def niced(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a thread at nice + BACKGROUND_NICE; blocks until it is done."""
    if BACKGROUND_NICE <= 0 or not sys.platform.startswith("linux"):
        return fn(*args, **kwargs)
    out: dict = {}

    def run() -> None:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
        except OSError as exc:                          # e.g. a sandbox refusing it: run at normal priority
            log.warning("could not lower the priority of a background phase: %s", exc)
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name=f"niced-{getattr(fn, '__name__', 'job')}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def thread_nice() -> int:
    """The calling thread's nice value (tests, diagnostics)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
