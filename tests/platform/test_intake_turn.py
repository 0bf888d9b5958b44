"""The write turn passed between group-commit leaders (web/intake_batch.GroupCommit `turn`, db.WriteTurn).

A leader takes the turn before writing; when a promoted leader is waiting it hands the turn over still held, up to
`turn_batches` consecutive batches per taking; otherwise it releases it. These tests check that every write runs
under the turn, that it is never held by two batches at once nor left held when nobody writes, that the limit is
kept, and that failures (a write, taking the turn) fail their own batch only. Then db.WriteTurn itself: released by
another thread than the one that took it, exclusive across processes, and one per process after a fork.
"""
from __future__ import annotations

import os
import threading

import pytest

from shopify_app.db import write_turn, write_turn_path
from shopify_app.web.intake_batch import GroupCommit
from tests.helpers import wait_for


class _Turn:
    """A turn that records its use and checks it is never taken twice (acquire blocks like the real one)."""

    def __init__(self, fail_acquires: int = 0):
        self.lock = threading.Lock()
        self.held = False
        self.acquires = 0
        self.releases = 0
        self.fail_acquires = fail_acquires

    def acquire(self):
        if self.fail_acquires:
            self.fail_acquires -= 1
            raise OSError("flock failed")
        self.lock.acquire()
        assert not self.held
        self.held = True
        self.acquires += 1

    def release(self):
        assert self.held
        self.held = False
        self.releases += 1
        self.lock.release()


def _run(gc, n_threads: int, per_thread: int) -> dict[int, object]:
    results: dict[int, object] = {}
    errors: dict[int, BaseException] = {}

    def worker(t):
        for k in range(per_thread):
            i = t * 1000 + k
            try:
                results[i] = gc.submit(i)
            except BaseException as exc:        # noqa: BLE001 - recorded per item
                errors[i] = exc

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return {**results, **errors}


@pytest.mark.parametrize("turn_batches", [1, 3])
def test_every_write_runs_under_the_turn_and_every_item_is_answered_once(turn_batches):
    turn = _Turn()
    batches: list[list[int]] = []
    in_turn: list[int] = []                     # consecutive batches written per taking of the turn

    def write(items):
        assert turn.held                         # the write runs under the turn
        if len(in_turn) < turn.acquires:
            in_turn.append(0)
        in_turn[-1] += 1
        batches.append(list(items))
        threading.Event().wait(0.0005)           # long enough for others to queue behind it
        return [i * 10 for i in items]

    gc = GroupCommit(write, lambda items, out: [o + 1 for o in out], turn=turn, turn_batches=turn_batches)
    answers = _run(gc, n_threads=8, per_thread=40)
    assert answers == {i: i * 10 + 1 for i in answers} and len(answers) == 320          # each answered, right
    assert sorted(i for b in batches for i in b) == sorted(answers)                     # each written once
    assert not turn.held and turn.acquires == turn.releases == gc.turns                 # released when idle
    assert max(in_turn) <= turn_batches and sum(in_turn) == len(batches)
    if turn_batches > 1:
        assert turn.acquires < len(batches)      # the turn was passed on at least once (8 threads queue up)


def test_a_failing_write_under_a_passed_turn_fails_its_own_batch_only():
    turn = _Turn()
    calls = {"n": 0}

    def write(items):
        assert turn.held
        calls["n"] += 1
        threading.Event().wait(0.0005)
        if calls["n"] % 3 == 0:
            raise RuntimeError("database is locked")
        return list(items)

    written_ok: set[int] = set()

    def hand_over(items, out):
        written_ok.update(items)
        return out

    gc = GroupCommit(write, hand_over, turn=turn, turn_batches=4)
    answers = _run(gc, n_threads=8, per_thread=30)
    failed = {i for i, a in answers.items() if isinstance(a, RuntimeError)}
    assert failed and written_ok and failed.isdisjoint(written_ok)
    assert failed | written_ok == set(answers)
    assert all(answers[i] == i for i in written_ok)
    assert not turn.held and turn.acquires == turn.releases


def test_a_turn_that_cannot_be_taken_fails_that_batch_and_the_next_one_takes_it():
    turn = _Turn(fail_acquires=1)
    gc = GroupCommit(lambda items: list(items), turn=turn, turn_batches=4)
    with pytest.raises(OSError, match="flock failed"):
        gc.submit(1)
    assert (turn.held, turn.acquires, turn.releases) == (False, 0, 0)     # nothing released that was not held
    assert gc.submit(2) == 2
    assert (turn.held, turn.acquires, turn.releases) == (False, 1, 1)


def test_requests_arriving_while_the_leader_waits_for_the_turn_join_its_batch():
    turn = _Turn()
    turn.lock.acquire()                          # the turn is busy (the other process writing)
    batches: list[list[int]] = []
    gc = GroupCommit(lambda items: batches.append(list(items)) or list(items), turn=turn, turn_batches=1)
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, gc.submit(i)), daemon=True)
               for i in range(4)]
    try:
        threads[0].start()
        wait_for(lambda: len(gc._queue) == 1 and gc._busy, timeout=10, message="the leader to wait for the turn")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: len(gc._queue) == 4, timeout=10, message="the others to queue behind the leader")
    finally:
        turn.lock.release()                      # the turn comes free: one batch with all four
    for t in threads:
        t.join(10)
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    assert batches == [[0, 1, 2, 3]]
    assert (turn.held, turn.acquires, turn.releases) == (False, 1, 1)


def test_without_a_turn_nothing_is_taken():
    gc = GroupCommit(lambda items: [i + 1 for i in items], turn=None, turn_batches=4)
    assert _run(gc, n_threads=4, per_thread=10) == {t * 1000 + k: t * 1000 + k + 1 for t in range(4) for k in range(10)}
    assert gc.turns == 0


def _flock_free(path: str) -> bool:
    """True when no one holds the flock on `path` (probed from a forked child, which opens the file itself)."""
    import fcntl

    pid = os.fork()
    if pid == 0:                                            # child: exit 0 when free, 1 when busy
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os._exit(0)
        except BlockingIOError:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def test_write_turn_is_released_by_another_thread_and_excludes_other_processes(db_url):
    if write_turn_path(db_url) is None:
        pytest.skip("SQLite write turn")
    turn = write_turn(db_url)
    assert turn is write_turn(db_url)                        # one per process and file
    path = write_turn_path(db_url)
    turn.acquire()
    try:
        assert not _flock_free(path)
    finally:
        releaser = threading.Thread(target=turn.release)     # the next leader releases what this one took
        releaser.start()
        releaser.join(10)
    assert _flock_free(path)
    turn.acquire()                                           # free again for this process's threads too
    turn.release()


def test_a_forked_process_gets_its_own_write_turn(db_url):
    if write_turn_path(db_url) is None:
        pytest.skip("SQLite write turn")
    parent_turn = write_turn(db_url)
    parent_turn.acquire()
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                         # child: a new turn object (own descriptor), blocked by the parent
            import fcntl

            child_turn = write_turn(db_url)
            ok = child_turn is not parent_turn
            try:
                fcntl.flock(child_turn._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ok = False                   # the parent holds the flock: must not be granted
            except BlockingIOError:
                pass
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
        os.close(w)
        answer = os.read(r, 1)
        os.waitpid(pid, 0)
        os.close(r)
    finally:
        parent_turn.release()
    assert answer == b"1"
    wait_for(lambda: _flock_free(write_turn_path(db_url)), timeout=5, message="the turn free after release")


def test_the_intake_with_a_passed_turn_records_every_delivery_once(db_url):
    """The real writer (record_batch under a held turn) behind 8 threads, on SQLite and PostgreSQL: one row per
    webhook id, re-sends answered already_recorded, the turn free afterwards."""
    from sqlalchemy import func, select

    from shopify_app.db import session_scope
    from shopify_app.models import WebhookDelivery, utcnow
    from shopify_app.web.intake import ALREADY_RECORDED, PENDING_ANALYTICS, Delivery, record_batch
    from tests import helpers

    shop = "turn-store.myshopify.com"
    helpers.add_shop(db_url, shop)
    turn = write_turn(db_url)
    gc = GroupCommit(lambda items: record_batch(db_url, items, turn_held=turn is not None), turn=turn,
                     turn_batches=4)

    def delivery(i: int) -> Delivery:
        return Delivery(shop_domain=shop, topic="orders/create", webhook_id=f"wh-{i % 150}", event_id=f"ev-{i % 150}",
                        api_version="2026-10", triggered_at=None, received_at=utcnow(), body='{"id": %d}' % i)

    answers = _run(_Submitting(gc, delivery), n_threads=8, per_thread=25)      # ids 0..199: 50 are re-sends
    statuses = [a.status for a in answers.values()]
    assert statuses.count(PENDING_ANALYTICS) == 150 and statuses.count(ALREADY_RECORDED) == 50
    with session_scope(db_url) as s:
        n_rows, n_ids = s.execute(select(func.count(), func.count(WebhookDelivery.webhook_id.distinct()))
                                  .where(WebhookDelivery.shop_domain == shop)).one()
    assert (n_rows, n_ids) == (150, 150)
    if turn is not None:
        assert 1 <= gc.turns <= gc.batches
        assert _flock_free(write_turn_path(db_url))


class _Submitting:
    """submit(i) -> the GroupCommit's answer for the i-th delivery (numbers 0..199 across the threads)."""

    def __init__(self, gc, delivery):
        self.gc, self.delivery = gc, delivery
        self.n = iter(range(10**6))
        self.lock = threading.Lock()

    def submit(self, _i):
        with self.lock:
            i = next(self.n)
        return self.gc.submit(self.delivery(i))
