"""Group commit for request threads: many concurrent requests, one database transaction.

Each webhook request must see its row committed before it answers 200. Committing one row per request costs one
transaction (and, on SQLite, one turn of the single write lock) per request; under load most of the time goes
there. `GroupCommit.submit(item)` instead queues the item and blocks until a batch holding it has been written:

- the first thread to arrive while no batch is being written becomes the *leader*: it takes everything queued
  (up to `max_batch`), calls `flush(items)` once for all of them, hands each waiting thread its result;
- threads arriving meanwhile queue up and wait; they are all written by the next flush, in one transaction;
- a leader stops as soon as its own item is done and passes the lead to the oldest waiting thread, so no request
  waits for more than the batch in progress plus its own batch.

No extra thread: the leader is a request thread that already holds the GIL, so an idle server writes a lone
request immediately (batch of one) and batching only appears when requests really overlap. A failing flush fails
every item of its batch (each request answers 500; Shopify retries, the unique constraint dedupes).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
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


class GroupCommit(Generic[T, R]):
    def __init__(self, flush: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 64):
        self._flush = flush
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiter[T, R]] = []
        self._busy = False          # a leader is writing or about to
        self.batches = 0            # counters for tests and benches
        self.items = 0

    def submit(self, item: T) -> R:
        """Write `item` (with whatever else is waiting) and return its result; re-raises the batch's error."""
        me: _Waiter[T, R] = _Waiter(item)
        with self._lock:
            self._queue.append(me)
            leading = not self._busy
            self._busy = True
        if not leading:
            me.event.wait()
            if me.done:
                return self._result(me)
            # promoted (me.lead): my item is still queued; write from here on
        while not me.done:
            with self._lock:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
            self._run(batch)
        with self._lock:
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.event.set()
            else:
                self._busy = False
        return self._result(me)

    def _run(self, batch: list[_Waiter[T, R]]) -> None:
        try:
            results = self._flush([w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
            for w, r in zip(batch, results):
                w.result = r
        except BaseException as exc:       # noqa: BLE001 - every waiter must be released, whatever happened
            for w in batch:
                w.error = exc
        self.batches += 1
        self.items += len(batch)
        for w in batch:
            w.done = True
            w.event.set()

    @staticmethod
    def _result(w: _Waiter[T, R]) -> R:
        if w.error is not None:
            raise w.error
        return w.result  # type: ignore[return-value]
