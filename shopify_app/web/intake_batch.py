"""Group commit for request threads (many concurrent requests, one database transaction), and the background
`Waker` that wakes the order jobs after the answer (at the end).

Each webhook request must see its row committed before it answers 200. Committing one row per request costs one
transaction (and, on SQLite, one turn of the single write lock) per request; under load most of the time goes
there. `GroupCommit.submit(item)` instead queues the item and blocks until a batch holding it has been written
and handed over:

- the first thread to arrive while no batch is being written becomes the *leader*: it takes everything queued
  (up to `max_batch`) and calls `write(items)` once for all of them (one transaction);
- threads arriving meanwhile queue up and wait; they are all written by the next batch;
- as soon as its own item is written, the leader passes the lead to the oldest waiting thread, then runs
  `hand_over(items, written)` for its batch (what must follow the commit but need not hold up the next batch's
  write: handing the shops to the Waker, enqueueing the rare non-order delivery) and releases the batch's threads
  with their results, one after the other: it releases the first waiting thread only, and each released thread
  releases the next one as soon as it runs (a chain). Why: a thread released while the GIL is held wakes only to
  block again on the GIL; the leader releasing all k at once (it holds the GIL) woke k threads into that second
  wait, while a chained thread is released by one that is about to give the GIL up. Measured in-process (8
  threads, SQLite batches of ~2.8, H1 stop 15): 5.0 -> 4.5 voluntary switches and ~135 -> ~123 us CPU per item.

No extra thread for the writes: the leader is a request thread, so an idle server writes a lone request at once (a
batch of one); batches grow only when requests really overlap. A failing write or hand-over fails every item of its
batch (each of those requests answers 500; Shopify retries and the unique constraint dedupes).

The write turn (`turn`: SQLite's cross-process write turn, db.WriteTurn) is taken by a leader before it takes its
batch from the queue (so requests arriving while it waits for the turn join that batch) and,
when a promoted leader is waiting, *passed* to it still held, up to `turn_batches` consecutive batches per taking;
then (or when nobody waits) it is released. Why: a SQLite connection drops its whole page cache whenever another
connection wrote since its last transaction, so with two gunicorn processes alternating turns every batch re-read
every page it touched (~100 us of CPU per batch measured in-process: docs/platform.md, stop 14). The
process that holds the turn meanwhile gathers the other's next batch, which just grows. (The app's intake runs
with turn_batches=1, no passing: since a leader takes its batch once it holds the turn, alternating after every
batch measured better; webhooks.TURN_BATCHES.)
(A dedicated writer thread instead of leader request threads was measured too: twice the thread switches per
request, no CPU saved.)
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    """One submitted item. `gate` is a lock taken at creation: a waiting thread blocks on acquiring it again, and
    the leader that promotes it or finishes its batch releases it. A bare lock, not a threading.Event: an Event is a
    Condition written in Python (a waiter lock allocated and queued per wait, a notify_all per set), and this is
    paid once per request under load. `next`: the waiter of the same batch this one releases once it is released
    itself (GroupCommit._finish: the chain)."""
    __slots__ = ("item", "gate", "done", "lead", "turn", "result", "error", "next")

    def __init__(self, item: T):
        self.item = item
        self.gate = threading.Lock()
        self.gate.acquire()
        self.done = False          # result or error is set
        self.lead = False          # promoted: this thread writes the next batch
        self.turn = 0              # promoted with the write turn held: batches already written under it
        self.result: R | None = None
        self.error: BaseException | None = None
        self.next: _Waiter | None = None


class GroupCommit(Generic[T, W, R]):
    def __init__(self, write: Callable[[Sequence[T]], Sequence[W]],
                 hand_over: Callable[[Sequence[T], Sequence[W]], Sequence[R]] | None = None, max_batch: int = 64,
                 turn=None, turn_batches: int = 1):
        self._write = write
        self._hand_over = hand_over or (lambda items, written: written)
        self._max_batch = max_batch
        self._turn = turn                   # acquire()/release(), held around writes; None: no turn to take
        self._turn_batches = max(1, turn_batches)
        self.turns = 0              # times the turn was taken (counters for tests and benches)
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
            me.gate.acquire()          # released by the leader that wrote my item, or that passes me the lead
            if me.done:
                if me.next is not None:
                    me.next.gate.release()     # the chain: the next waiter of my batch (_finish)
                return self._result(me)
            # promoted (me.lead): my item is still queued; write from here on (me.turn: the turn is passed held)
        held = me.turn > 0                              # this thread holds the turn (passed to it, or taken)
        written_in_turn = me.turn
        while True:
            error = None
            if self._turn is not None and not held:
                try:
                    self._turn.acquire()
                    held, written_in_turn = True, 0
                    self.turns += 1
                except BaseException as exc:   # noqa: BLE001 - the batch fails; its waiters must be released
                    error = exc
            # The batch is taken once the turn is held, not before: what queued while this thread waited for the
            # turn (the other process writing) joins it. Measured (stop 15): mean batch 2.85 -> 3.3 items,
            # ~110 -> ~100 us of CPU per written row.
            with self._lock:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
            written = None
            if error is None:
                written, error = self._write_batch(batch)
                written_in_turn += 1
            if me in batch:
                break
            self._finish(batch, written, error, None)  # a backlog beyond max_batch: finish it, keep leading
        release = held
        with self._lock:                                # my item is written: the next batch is someone else's
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                if held and written_in_turn < self._turn_batches:
                    nxt.turn = written_in_turn          # it writes at once, under the turn still held
                    release = False
                nxt.gate.release()
            else:
                self._busy = False
        if release:
            self._turn.release()
        self._finish(batch, written, error, me)
        return self._result(me)

    def _write_batch(self, batch: list[_Waiter]):
        try:
            written = self._write([w.item for w in batch])
            if len(written) != len(batch):
                raise RuntimeError(f"write returned {len(written)} results for {len(batch)} items")
            return written, None
        except BaseException as exc:       # noqa: BLE001 - every waiter must be released, whatever happened
            return None, exc

    def _finish(self, batch: list[_Waiter], written, error: BaseException | None, leader: _Waiter | None) -> None:
        """Set the batch's results (or its error) and release its waiting threads as a chain: the first one here,
        each of them the next (submit). `leader`: the calling thread's own waiter when it is in the batch (it is not
        waiting; left out of the chain)."""
        if error is None:
            try:
                results = self._hand_over([w.item for w in batch], written)
                for w, r in zip(batch, results, strict=True):
                    w.result = r
            except BaseException as exc:   # noqa: BLE001
                error = exc
        self.batches += 1
        self.items += len(batch)
        waiting = [w for w in batch if w is not leader]
        for k, w in enumerate(waiting):
            w.error = error
            w.next = waiting[k + 1] if k + 1 < len(waiting) else None
            w.done = True               # set before the release: a released thread reads next/done at once
        if leader is not None:
            leader.error = error
            leader.done = True
        if waiting:
            waiting[0].gate.release()   # locked, as every gate of the chain: each is released exactly once

    @staticmethod
    def _result(w: _Waiter) -> R:
        if w.error is not None:
            raise w.error
        return w.result  # type: ignore[return-value]


class Lanes(Generic[T, R]):
    """Up to `len(lanes)` group-commit batches of one process written at once, each by its own GroupCommit (own
    leader, own queue, own connection: `make(k)` builds lane k). For PostgreSQL, where a batch mostly *waits* for
    the server's commit (one WAL flush, ~1.6 ms with fsync on) and two transactions commit concurrently; SQLite
    keeps one GroupCommit (its writes serialize on the database's write lock anyway).

    `submit(item)` joins the first lane with fewer than `spill` items queued (all full: the shortest queue). So
    lane 0 takes everything until its next batch has `spill` waiting, and only then does a second batch start
    beside it: batches stay as large as with one lane (a second lane taken whenever lane 0 was merely busy split
    them: measured +70 us of CPU per request under wrk, no throughput gained), and the extra lanes start when
    requests really pile up behind a commit. The choice reads the queues without their locks: a race only puts a
    request in a lane it would not have chosen. Each lane answers its items exactly once and fails only its own
    batch (GroupCommit); what two lanes write concurrently is ordered by the database (record_batch: the unique
    constraint decides, rows are inserted in key order so two batches never wait for each other in a cycle)."""

    spill = 4

    def __init__(self, make: Callable[[int], GroupCommit], n: int):
        self.lanes: list[GroupCommit] = [make(k) for k in range(max(1, n))]

    def submit(self, item: T) -> R:
        for lane in self.lanes:
            if len(lane._queue) < self.spill:
                return lane.submit(item)
        return min(self.lanes, key=lambda g: len(g._queue)).submit(item)

    @property
    def batches(self) -> int:
        return sum(g.batches for g in self.lanes)

    @property
    def items(self) -> int:
        return sum(g.items for g in self.lanes)


class Waker:
    """Calls `fn(key)` from one background thread, after the caller has moved on; keys asked for meanwhile are
    merged (one call per key per round).

    For the intake's wake of a shop's order job (one Redis SET NX, then an enqueue when the key was free): the rows
    are committed before `request(shop_id)`, and the call covering that request *starts after* it (a key asked for
    while its call runs is asked again in the next round), so the job is woken after the rows are visible, as when
    the request thread woke it itself. The request answers without waiting for Redis: the committed row is the
    record and the wake only liveness; a wake that fails or is never made (Redis down, process killed) leaves the
    rows 'pending_analytics', which the sweeper (workers.ingest.sweep_stuck_deliveries) finds and wakes.

    `min_interval`: the rounds start at least this far apart (the first at once); requests made meanwhile join the
    next round, so under load one call serves many batches.

    `fn` returns False (or raises) on failure: the rest of that round is dropped (each try may wait for Redis's
    connect timeout; the sweeper covers them) and counted in `failures`. Not fork-safe: one per process."""

    def __init__(self, fn: Callable[[object], bool], name: str = "intake-waker", min_interval: float = 0.0):
        self._fn = fn
        self._name = name
        self.min_interval = min_interval             # seconds between the starts of two rounds
        self._cond = threading.Condition()
        self._pending: dict[object, None] = {}      # keys asked for since the current round started, in order
        self._running = False                       # a round is being called
        self._thread: threading.Thread | None = None
        self.rounds = 0                              # counters for tests and benches
        self.calls = 0
        self.failures = 0
        self.dropped = 0

    def request(self, key) -> None:
        with self._cond:
            idle = not self._pending and not self._running
            self._pending[key] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            # Only an idle thread (waiting for a first key) needs waking: one pausing out min_interval or making
            # calls takes the keys asked for meanwhile when its pause or round ends. Waking it on every request
            # cost a thread switch per batch under load, for nothing.
            if idle:
                self._cond.notify_all()   # not notify(): a wait_idle() caller waits on the same condition

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every key asked for so far has had its call (tests; process exit). False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._running, timeout)

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                self._running = False
                self._cond.notify_all()
                while not self._pending:
                    self._cond.wait()
                # Under load, more batches join the round while it waits out min_interval: fewer calls.
                self._running = True
                due = last + self.min_interval
                while (pause := due - time.monotonic()) > 0:
                    self._cond.wait(pause)           # a spurious or early wake-up: wait out the rest
                last = time.monotonic()
                keys = list(self._pending)
                self._pending.clear()
            self.rounds += 1
            for n, key in enumerate(keys):
                try:
                    ok = self._fn(key)
                except Exception as exc:                 # noqa: BLE001 - fn should log; the thread must go on
                    log.warning("wake of %r failed (%s: %s)", key, type(exc).__name__, exc)
                    ok = False
                self.calls += 1
                if not ok:
                    self.failures += 1
                    self.dropped += len(keys) - n - 1
                    break
