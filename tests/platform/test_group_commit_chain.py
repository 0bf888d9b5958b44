"""GroupCommit releases a batch's waiting threads as a chain (web/intake_batch.py): the leader releases the first
one, each released thread the next. These tests check the chain itself (order, the leader left out, each gate
released once) and that every waiter of big batches - written, failed, or a backlog beyond max_batch finished by a
leader that is not in it - is answered exactly once with its own result.
"""
from __future__ import annotations

import threading

from shopify_app.web.intake_batch import GroupCommit, _Waiter
from tests.helpers import wait_for


def _locked(w: _Waiter) -> bool:
    if w.gate.acquire(blocking=False):
        w.gate.release()
        return False
    return True


def test_finish_releases_only_the_first_waiter_and_links_the_rest_in_order_leaving_the_leader_out():
    gc = GroupCommit(lambda items: list(items), lambda items, out: [o * 2 for o in out])
    batch = [_Waiter(i) for i in range(4)]
    leader = batch[1]
    gc._finish(batch, [10, 11, 12, 13], None, leader)
    waiting = [batch[0], batch[2], batch[3]]
    assert [w.next for w in waiting] == [batch[2], batch[3], None]
    assert leader.next is None and leader.done and leader.result == 22
    assert [w.result for w in batch] == [20, 22, 24, 26] and all(w.done for w in batch)
    assert [_locked(w) for w in waiting] == [False, True, True]     # only the head is released by the leader
    assert _locked(leader)                                         # not waiting: its gate is left alone


def test_finish_of_a_failed_batch_chains_the_error_to_every_waiter():
    gc = GroupCommit(lambda items: list(items))
    batch = [_Waiter(i) for i in range(3)]
    boom = RuntimeError("write failed")
    gc._finish(batch, None, boom, None)                             # a backlog batch: no leader among them
    assert [w.error for w in batch] == [boom] * 3 and all(w.done for w in batch)
    assert [w.next for w in batch] == [batch[1], batch[2], None]
    assert [_locked(w) for w in batch] == [False, True, True]


def _big_batches(n: int, max_batch: int, fail_batches: set[int]):
    """n threads queued behind a first write held open, then written in batches of max_batch; the writes numbered
    in fail_batches raise. Returns (results, errors, batch sizes)."""
    gate, writing = threading.Event(), threading.Event()
    sizes: list[int] = []

    def write(items):
        writing.set()
        gate.wait(10)
        sizes.append(len(items))
        if len(sizes) - 1 in fail_batches:
            raise RuntimeError(f"batch {len(sizes) - 1} failed")
        return [i * 10 for i in items]

    gc = GroupCommit(write, lambda items, out: [o + 1 for o in out], max_batch=max_batch)
    results: dict[int, int] = {}
    errors: dict[int, str] = {}
    lock = threading.Lock()

    def submit(i):
        try:
            r = gc.submit(i)
            with lock:
                assert i not in results and i not in errors
                results[i] = r
        except RuntimeError as exc:
            with lock:
                assert i not in results and i not in errors
                errors[i] = str(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    threads[0].start()
    assert writing.wait(10)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: len(gc._queue) >= n - 1, timeout=10, message="every submit queued behind the first batch")
    gate.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a waiter was never released"
    assert gc.items == n
    return results, errors, sizes


def test_every_waiter_of_big_batches_and_of_a_backlog_is_answered_once_with_its_own_result():
    results, errors, sizes = _big_batches(40, max_batch=16, fail_batches=set())
    assert sizes == [1, 16, 16, 7]
    assert not errors
    assert results == {i: i * 10 + 1 for i in range(40)}


def test_a_failing_batch_in_the_chain_fails_its_own_waiters_only():
    results, errors, sizes = _big_batches(40, max_batch=16, fail_batches={2})
    assert sizes == [1, 16, 16, 7]
    assert len(errors) == 16 and set(errors.values()) == {"batch 2 failed"}
    assert len(results) == 24 and all(results[i] == i * 10 + 1 for i in results)
    assert set(results) | set(errors) == set(range(40))
