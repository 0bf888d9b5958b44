"""Group commit for request threads: many concurrent requests, one database transaction.

Each webhook request must see its row committed before it answers 200. Committing one row per request costs one
transaction (and, on SQLite, one turn of the single write lock) per request; under load most of the time goes
there. `GroupCommit.submit(item)` instead queues the item and blocks until a batch holding it has been written
and handed over:

- the first thread to arrive while no batch is being written becomes the *leader*: it takes everything queued
  (up to `max_batch`) and calls `write(items)` once for all of them (one transaction);
- threads arriving meanwhile queue up and wait; they are all written by the next batch;
- as soon as its own item is written, the leader passes the lead to the oldest waiting thread, then runs
  `hand_over(items, written)` for its batch (the Redis part: a network round trip that must follow the commit
  but need not hold up the next batch's write) and releases the batch's threads with their results.

No extra thread: the leader is a request thread, so an idle server writes a lone request at once (a batch of
one); batches grow only when requests really overlap. A failing write or hand-over fails every item of its batch
(each of those requests answers 500; Shopify retries and the unique constraint dedupes).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("item", "event", "done", "lead", "result", "error")

    def __init__(self, item: T):
        self.item = item
        self.event = threading.Event()
        self.done = False          # result or error is set
        self.lead = False          # promoted: this thread writes the next batch
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, W, R]):
    def __init__(self, write: Callable[[Sequence[T]], Sequence[W]],
                 hand_over: Callable[[Sequence[T], Sequence[W]], Sequence[R]] | None = None, max_batch: int = 64):
        self._write = write
        self._hand_over = hand_over or (lambda items, written: written)
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._busy = False          # a leader is writing or about to
        self.batches = 0            # counters for tests and benches
        self.items = 0

    def submit(self, item: T) -> R:
        """Write `item` (with whatever else is waiting), hand it over, return its result; re-raises the batch's
        error."""
        me: _Waiter = _Waiter(item)
        with self._lock:
            self._queue.append(me)
            leading = not self._busy
            self._busy = True
        if not leading:
            me.event.wait()
            if me.done:
                return self._result(me)
            # promoted (me.lead): my item is still queued; write from here on
        while True:
            with self._lock:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
            written, error = self._write_batch(batch)
            if me in batch:
                break
            self._finish(batch, written, error)        # a backlog beyond max_batch: finish it, keep leading
        with self._lock:                                # my item is written: the next batch is someone else's
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.event.set()
            else:
                self._busy = False
        self._finish(batch, written, error)
        return self._result(me)

    def _write_batch(self, batch: list[_Waiter]):
        try:
            written = self._write([w.item for w in batch])
            if len(written) != len(batch):
                raise RuntimeError(f"write returned {len(written)} results for {len(batch)} items")
            return written, None
        except BaseException as exc:       # noqa: BLE001 - every waiter must be released, whatever happened
            return None, exc

    def _finish(self, batch: list[_Waiter], written, error: BaseException | None) -> None:
        if error is None:
            try:
                results = self._hand_over([w.item for w in batch], written)
                for w, r in zip(batch, results, strict=True):
                    w.result = r
            except BaseException as exc:   # noqa: BLE001
                error = exc
        self.batches += 1
        self.items += len(batch)
        for w in batch:
            w.error = error
            w.done = True
            w.event.set()

    @staticmethod
    def _result(w: _Waiter) -> R:
        if w.error is not None:
            raise w.error
        return w.result  # type: ignore[return-value]


class Coalesced(Generic[R]):
    """Calls of `fn(key)` that may be merged: a caller is answered by a call that *started after* it asked.

    For the intake's wake of a shop's order job (one Redis SET NX after the rows are committed): while one call for
    a shop is in flight, every batch committed meanwhile waits for the next call, which covers all of them. So a
    process makes at most one call per shop at a time (and per round trip), however many batches it commits."""

    class _State:
        __slots__ = ("asked", "answered", "running", "result")

        def __init__(self):
            self.asked = 0          # tickets handed out
            self.answered = 0       # every ticket <= this one has its result
            self.running = False
            self.result = None

    def __init__(self, fn: Callable[[object], R]):
        self._fn = fn
        self._cond = threading.Condition()
        self._states: dict[object, Coalesced._State] = {}
        self.calls = 0

    def __call__(self, key) -> R:
        with self._cond:
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = self._State()
            st.asked += 1
            ticket = st.asked
            while st.answered < ticket and st.running:
                self._cond.wait()
            if st.answered >= ticket:
                return st.result
            st.running = True
            covered = st.asked              # everyone who asked so far is covered by the call starting now
        try:
            result = self._fn(key)
        except BaseException:
            with self._cond:                # the waiters start their own call
                st.running = False
                self._cond.notify_all()
            raise
        with self._cond:
            self.calls += 1
            st.running = False
            if covered > st.answered:
                st.answered, st.result = covered, result
            self._cond.notify_all()
        return result
