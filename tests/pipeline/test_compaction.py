"""Pair count blobs and their compaction: exact folds, writes landing between compaction's read and write, legacy
PairCountDelta rows, and the volume trigger of the order job."""
from __future__ import annotations

import numpy as np
from sqlalchemy import func, insert, select

from shopify_app.analytics import counts as C
from shopify_app.analytics.incremental import clean_pass
from shopify_app.models import BasketCountDelta, ItemCountDelta, PairCountBlob, PairCountDelta
from workers.rebuild_jobs import (
    apply_compaction, compact_counts, compact_job_id, read_bucket_counts, read_compaction, rebuild_shop_state,
)

from .test_order_jobs import P1, P2, deliver, payload
from .test_sequential import apply_batches, definition, retail_history, tables
from .test_rebuild import NOW, apply_incrementally, as_reference, make_shop, random_versions, state


def blob_ids(session, shop_id):
    ids = set(session.scalars(select(PairCountBlob.id).where(PairCountBlob.shop_id == shop_id)))
    session.commit()
    return ids


def rows(session, model, shop_id):
    n = session.scalar(select(func.count()).select_from(model).where(model.shop_id == shop_id))
    session.commit()
    return n


def seq_payloads(session, shop_id):
    """Folded sequential pair payloads of the shop (CountSnapshot rows of the sequential kind)."""
    from shopify_app.models import CountSnapshot
    from workers.sequential_jobs import SNAPSHOT_KIND

    n = session.scalar(select(func.count()).select_from(CountSnapshot).where(
        CountSnapshot.shop_id == shop_id, CountSnapshot.kind == SNAPSHOT_KIND))
    session.commit()
    return n


def test_compaction_folds_exactly_and_keeps_what_landed_after_its_read(session):
    """Compaction reads (plan), then more batches commit (new blobs, item / basket deltas moved, orders folded
    earlier updated or deleted), then it writes: the counts stay exact, the new blobs survive and are folded by
    the next compaction."""
    shop = make_shop(session)
    versions = random_versions(7)
    first, later = versions[:250], versions[250:]
    apply_incrementally(session, shop, first)
    folded = blob_ids(session, shop.id)
    assert folded

    plan = read_compaction(session, shop.id)          # the read phase (a read transaction in compact_shop)
    session.commit()
    apply_incrementally(session, shop, later)          # batches between the read and the write
    landed = blob_ids(session, shop.id) - folded
    assert landed
    expected = as_reference(clean_pass(versions))
    assert state(session, shop.id) == expected

    assert apply_compaction(session, shop.id, plan) == len(plan.buckets) > 0
    session.commit()
    assert blob_ids(session, shop.id) == landed        # exactly the blobs it read are gone
    assert state(session, shop.id) == expected

    assert compact_counts(session, shop.id) > 0         # the next compaction folds the rest
    session.commit()
    for model in (PairCountBlob, ItemCountDelta, BasketCountDelta):
        assert rows(session, model, shop.id) == 0
    assert state(session, shop.id) == expected


def test_compaction_leaves_a_bucket_rebuilt_or_compacted_meanwhile(session):
    shop = make_shop(session)
    versions = random_versions(8, n_orders=80)
    apply_incrementally(session, shop, versions)
    expected = as_reference(clean_pass(versions))
    plan = read_compaction(session, shop.id)
    session.commit()
    again = read_compaction(session, shop.id)
    session.commit()
    assert apply_compaction(session, shop.id, again) == len(again.buckets)   # another compaction won the race
    session.commit()
    assert apply_compaction(session, shop.id, plan) == 0                     # nothing folded twice
    session.commit()
    assert state(session, shop.id) == expected

    apply_incrementally(session, shop, versions[:40])     # replays: no change, but fresh batches
    plan = read_compaction(session, shop.id)
    session.commit()
    rebuild_shop_state(session, shop.id, NOW)
    session.commit()
    assert apply_compaction(session, shop.id, plan) == 0
    session.commit()
    assert state(session, shop.id) == expected


def test_legacy_pair_rows_are_read_and_folded(session):
    """A database left by a release that wrote one PairCountDelta row per pair stays exact: rows are summed by
    the readers and folded (deleted) by compaction."""
    shop = make_shop(session)
    versions = random_versions(9, n_orders=60)
    apply_incrementally(session, shop, versions)
    expected = as_reference(clean_pass(versions))
    legacy = []
    for blob in session.scalars(select(PairCountBlob).where(PairCountBlob.shop_id == shop.id)):
        a, b, n = C.decode_pairs(blob.data)
        legacy += [(blob.bucket, int(x), int(y), int(c)) for x, y, c in zip(a, b, n)]
    summed: dict = {}
    for bucket, x, y, c in legacy:
        summed[(bucket, x, y)] = summed.get((bucket, x, y), 0) + c
    session.execute(PairCountBlob.__table__.delete().where(PairCountBlob.shop_id == shop.id))
    session.execute(insert(PairCountDelta), [{"shop_id": shop.id, "segment": "*", "bucket": k[0], "item_a": k[1],
                                              "item_b": k[2], "count": c} for k, c in summed.items()])
    session.commit()
    assert state(session, shop.id) == expected
    assert compact_counts(session, shop.id) > 0
    session.commit()
    assert rows(session, PairCountDelta, shop.id) == 0
    assert state(session, shop.id) == expected


def test_one_blob_per_batch_and_bucket(session):
    """A batch of orders writes one blob per bucket, holding the batch's aggregated signed pairs."""
    from workers.order_jobs import process_shop_orders

    shop = make_shop(session, "blobs.myshopify.com")
    P = [1001, 1002, 1003]
    deliver(session, shop, "orders/create", payload(1, cust=9001, items=((P[0], 1), (P[1], 1), (P[2], 1))))
    deliver(session, shop, "orders/create", payload(2, cust=9002, items=((P[0], 1), (P[1], 2))))
    session.commit()
    res = process_shop_orders(session, shop.id, now=NOW)
    session.commit()
    assert res["applied"] == 2 and res["compact_counts"] is False
    (blob,) = session.scalars(select(PairCountBlob).where(PairCountBlob.shop_id == shop.id)).all()
    a, b, n = C.decode_pairs(blob.data)
    assert blob.pairs == 3 and blob.segment == "*"
    assert list(zip(a.tolist(), b.tolist(), n.tolist())) == [(P[0], P[1], 2), (P[0], P[2], 1), (P[1], P[2], 1)]
    session.commit()
    ((_, items, pairs),) = read_bucket_counts(session, shop.id).values()
    assert pairs == {(P[0], P[1]): 2, (P[0], P[2]): 1, (P[1], P[2]): 1} and items[P[0]] == 2
    assert np.int64(blob.id) > 0


def test_blob_volume_enqueues_one_coalesced_compaction(config, session, monkeypatch):
    """Past COMPACT_BLOBS the batch asks for a compaction; the follow-up step enqueues it under the shop's fixed
    job id (twice: still one job); running it folds the blobs."""
    from shopify_app.queues import DEFAULT, get_queue
    from workers import context, order_jobs
    from workers.rebuild_jobs import compact_shop

    monkeypatch.setattr(order_jobs, "COMPACT_BLOBS", 2)
    shop = make_shop(session, "volume.myshopify.com")
    results = []
    for oid in range(1, 4):
        deliver(session, shop, "orders/create", payload(oid, cust=9100 + oid, day=oid))
        session.commit()
        results.append(order_jobs.process_shop_orders(session, shop.id, now=NOW))
        session.commit()
    assert [r["compact_counts"] for r in results] == [False, True, True]
    before = read_bucket_counts(session, shop.id)
    session.commit()
    context.set_config(config)
    try:
        for r in results[1:]:
            order_jobs.enqueue_followups(config, shop.id, {"compact_counts": r["compact_counts"]})
        q = get_queue(config, DEFAULT)
        assert [j for j in q.job_ids if j.startswith("compact-counts")] == [compact_job_id(shop.id)]
        assert compact_shop(shop.id)["buckets"] >= 1
    finally:
        context.set_config(None)
    assert blob_ids(session, shop.id) == set()
    assert read_bucket_counts(session, shop.id) == before


def test_a_real_worker_compacts_when_blobs_pile_up(config, session, worker_process, monkeypatch):
    """Real RQ worker (queues webhooks + default): the order job's batch passes COMPACT_BLOBS and enqueues the
    coalesced compaction, which the worker runs: blobs folded, counts unchanged."""
    from shopify_app.queues import DEFAULT, WEBHOOKS
    from tests.conftest import wait_for
    from workers.order_jobs import enqueue_process_orders, process_shop_orders

    monkeypatch.setenv("COMPACT_BLOBS", "3")          # read by the worker process at import
    shop = make_shop(session, "worker-compaction.myshopify.com")
    for oid in range(1, 3):                            # two blobs written here, one batch each
        deliver(session, shop, "orders/create", payload(oid, cust=9200 + oid, day=oid))
        session.commit()
        process_shop_orders(session, shop.id, now=NOW)
        session.commit()
    deliver(session, shop, "orders/create", payload(3, cust=9203, day=3))
    session.commit()
    assert len(blob_ids(session, shop.id)) == 2
    worker_process(WEBHOOKS, DEFAULT)
    enqueue_process_orders(config, shop.id)

    def folded():
        counts = read_bucket_counts(session, shop.id)
        n = rows(session, PairCountBlob, shop.id)
        return counts if n == 0 and counts else None

    counts = wait_for(folded, timeout=60, message="the compaction job to fold the blobs")
    ((baskets, items, pairs),) = counts.values()
    assert baskets == 3 and pairs == {(P1, P2): 3} and items == {P1: 3, P2: 3}


# --------------------------------------------------------------------------------------------- sequential blobs
def _seq_shop(session, domain, versions):
    shop = make_shop(session, domain)
    apply_batches(session, shop, versions)
    return shop


def test_sequential_compaction_keeps_blobs_written_after_its_read(session):
    """Sequential pair blobs: compaction reads (plan), batches commit more blobs, compaction writes: exactly the
    blobs it read are gone, the new ones stay and still count; a plan whose blobs a rebuild (or another
    compaction) removed in between folds nothing."""
    from shopify_app.models import SequentialPairBlob, SequentialPairDelta
    from workers.sequential_jobs import (
        apply_sequential_compaction, compact_sequential, read_sequential_compaction, rebuild_sequential,
    )

    versions, edits = retail_history()
    cut = len(versions) // 2
    shop = _seq_shop(session, "seq-compact.myshopify.com", versions[:cut])
    seq_blobs = lambda: set(session.scalars(select(SequentialPairBlob.id).where(        # noqa: E731
        SequentialPairBlob.shop_id == shop.id)))
    read = seq_blobs()
    plan = read_sequential_compaction(session, shop.id)
    session.commit()
    assert {i for f in plan for i in f.blob_ids} == read
    apply_batches(session, shop, versions[cut:] + edits)       # between the read and the write
    landed = seq_blobs() - read
    session.commit()
    assert landed
    expected = definition(versions + edits)
    assert tables(session, shop.id) == expected

    assert apply_sequential_compaction(session, shop.id, plan) == len(plan) > 0
    session.commit()
    assert seq_blobs() == landed
    session.commit()
    assert seq_payloads(session, shop.id) == len({f.bucket for f in plan})
    assert rows(session, SequentialPairDelta, shop.id) == 0
    assert tables(session, shop.id) == expected
    assert apply_sequential_compaction(session, shop.id, plan) == 0          # folded already: nothing twice
    session.commit()
    assert tables(session, shop.id) == expected

    stale = read_sequential_compaction(session, shop.id)
    session.commit()
    rebuild_sequential(session, shop.id)                                      # deletes every blob and payload
    session.commit()
    assert seq_blobs() == set()
    session.commit()
    assert seq_payloads(session, shop.id) == 0
    assert apply_sequential_compaction(session, shop.id, stale) == 0
    session.commit()
    assert tables(session, shop.id) == expected
    apply_batches(session, shop, edits[:5])                                    # replays write no blob
    assert seq_blobs() == set()
    session.commit()
    assert compact_sequential(session, shop.id) == 0
    session.commit()
    assert rows(session, SequentialPairDelta, shop.id) > 0 and tables(session, shop.id) == expected


def test_compaction_job_folds_sequential_blobs_and_rules_stay_identical(config, session, monkeypatch):
    """compact_shop (the hourly / triggered job) folds the sequential blobs with the count blobs; the mined rules,
    sequential ones included, are identical before and after; compaction_due follows COMPACT_BLOBS."""
    from shopify_app.models import AssociationRule, SequentialPairBlob, SequentialPairDelta
    from workers import context, order_jobs
    from workers.rebuild_jobs import compact_all_shops, compact_shop
    from workers.rules_jobs import mine_rules
    from workers.sequential_jobs import compaction_due, rebuild_sequential_job

    versions, edits = retail_history()
    shop = _seq_shop(session, "seq-job.myshopify.com", versions + edits)
    session.get(type(shop), shop.id).settings = {"min_count": 2, "min_support": 0.0, "rules_window_months": 0}
    session.commit()
    n_blobs = rows(session, SequentialPairBlob, shop.id)
    monkeypatch.setattr(order_jobs, "COMPACT_BLOBS", n_blobs)
    assert compaction_due(session, shop.id)
    monkeypatch.setattr(order_jobs, "COMPACT_BLOBS", n_blobs + 1)
    assert not compaction_due(session, shop.id)
    session.commit()

    def rules():
        t = AssociationRule.__table__
        out = {(r.kind, tuple(r.antecedent), tuple(r.consequent)): (r.count, round(r.confidence, 12), round(r.lift, 9))
               for r in session.execute(select(t).where(t.c.shop_id == shop.id))}
        session.commit()
        return out

    context.set_config(config)
    try:
        mine_rules(shop.id, now=NOW)
        before = rules()
        assert sum(1 for k in before if k[0] == "sequential") > 100
        res = compact_shop(shop.id)
        assert res["sequential_folds"] >= 2 and res["sequential_skipped"] == 0 and res["buckets"] >= 2
        assert rows(session, SequentialPairBlob, shop.id) == 0 and rows(session, PairCountBlob, shop.id) == 0
        assert rows(session, SequentialPairDelta, shop.id) == 0                  # folded into payloads, not rows
        assert seq_payloads(session, shop.id) == len({b for b, _a, _c in definition(versions + edits)[1]}) >= 2
        assert not compaction_due(session, shop.id)
        session.commit()
        mine_rules(shop.id, now=NOW)
        assert rules() == before
        assert compact_all_shops()["sequential_folds"] == 0                    # nothing left to fold
        rebuild_sequential_job(shop.id)                                        # payloads -> rows, exact
        assert seq_payloads(session, shop.id) == 0 and rows(session, SequentialPairDelta, shop.id) > 0
        shop_id = shop.id
        assert tables(session, shop_id) == definition(versions + edits)      # (expires `shop`)
        session.commit()
        mine_rules(shop_id, now=NOW)
        assert rules() == before
    finally:
        context.set_config(None)


def test_shop_redact_leaves_no_sequential_rows_or_blobs(config, session):
    """shop/redact (the real compliance handler): the shop's sequential rows, folded payloads and blobs are gone,
    another shop's stay."""
    import json

    from shopify_app.models import SequentialItemDelta, SequentialPairBlob, SequentialPairDelta, WebhookDelivery
    from workers import context
    from workers.ingest import process_delivery
    from workers.sequential_jobs import compact_sequential, rebuild_sequential

    versions, _ = retail_history()
    shop = _seq_shop(session, "seq-redact.myshopify.com", versions[:150])
    other = _seq_shop(session, "seq-keep.myshopify.com", versions[:150])
    rebuild_sequential(session, shop.id)                                       # rows, ...
    session.commit()
    apply_batches(session, shop, versions[150:175])
    compact_sequential(session, shop.id)                                       # ... payloads and ...
    compact_sequential(session, other.id)
    session.commit()
    apply_batches(session, shop, versions[175:200])                           # ... blobs
    models = (SequentialItemDelta, SequentialPairDelta, SequentialPairBlob)
    assert all(rows(session, m, shop.id) > 0 for m in models) and seq_payloads(session, shop.id) > 0
    kept = [rows(session, m, other.id) for m in models]
    kept_payloads = seq_payloads(session, other.id)
    d = WebhookDelivery(shop_id=shop.id, shop_domain=shop.domain, topic="shop/redact", webhook_id="redact-1",
                        status="received", body=json.dumps({"shop_id": 1, "shop_domain": shop.domain}))
    session.add(d)
    session.commit()
    context.set_config(config)
    try:
        assert process_delivery(d.id)["status"] == "processed"
    finally:
        context.set_config(None)
    assert [rows(session, m, shop.id) for m in models] == [0, 0, 0]
    assert [rows(session, m, other.id) for m in models] == kept
    assert seq_payloads(session, shop.id) == 0 and seq_payloads(session, other.id) == kept_payloads > 0


def test_sequential_fold_in_bounded_transactions_without_the_shop_lock(config, session, db_url, monkeypatch):
    """compact_sequential_job cuts the fold into transactions of at most FOLD_PAIRS blob pairs (one blob at
    least) and, on PostgreSQL, does not wait for the shop row lock an order batch holds: it only excludes the
    other writers of pair rows (lock_sequential)."""
    import threading

    from shopify_app.db import session_factory
    from shopify_app.models import SequentialPairBlob
    from workers import context, sequential_jobs
    from workers.sequential_jobs import compact_sequential_job, read_sequential_compaction

    versions, edits = retail_history()
    shop = _seq_shop(session, "seq-folds.myshopify.com", versions + edits)
    expected = definition(versions + edits)
    sizes = sorted(session.scalars(select(SequentialPairBlob.pairs).where(SequentialPairBlob.shop_id == shop.id)))
    session.commit()
    limit = sizes[len(sizes) // 2]
    folds = read_sequential_compaction(session, shop.id, fold_pairs=limit)
    session.commit()
    assert len(folds) > len({f.bucket for f in folds})
    for f in folds:
        blob_pairs = session.scalars(select(SequentialPairBlob.pairs).where(SequentialPairBlob.id.in_(f.blob_ids)))
        assert sum(blob_pairs.all()) <= limit or len(f.blob_ids) == 1
    session.commit()

    monkeypatch.setattr(sequential_jobs, "FOLD_PAIRS", limit)
    context.set_config(config)
    try:
        if session.get_bind().dialect.name != "postgresql":
            res = compact_sequential_job(shop.id)         # SQLite: one writer at a time anyway
        else:
            holder = session_factory(db_url)()
            try:
                context.lock_shop(holder, shop.id)        # an order batch of the shop, in progress
                result = []
                worker = threading.Thread(target=lambda: result.append(compact_sequential_job(shop.id)),
                                          daemon=True)
                worker.start()
                worker.join(60)
                assert result, "the fold waited for the shop row lock"
                res = result[0]
            finally:
                holder.rollback()
                holder.close()
    finally:
        context.set_config(None)
    assert res["folds"] == len(folds) and res["skipped"] == 0 and res["blobs"] == len(sizes)
    assert rows(session, SequentialPairBlob, shop.id) == 0
    assert seq_payloads(session, shop.id) == len({f.bucket for f in folds})    # several folds, one payload each
    assert tables(session, shop.id) == expected


def _window_pairs(history) -> dict:
    """{(a, b): count} of the definition summed over every bucket."""
    _, ref = definition(history)
    window: dict = {}
    for (_b, x, y), n in ref.items():
        window[(x, y)] = window.get((x, y), 0) + n
    return window


def _read_with_a_commit_in_between(config, db_url, monkeypatch, shop_id: int, other_worker) -> tuple[dict, int]:
    """rules_jobs.read_sequential on its own reader session, with `other_worker()` (its own transactions)
    committing after the reader's first payload read and before its row read. (pairs read, reads made)."""
    from shopify_app.db import reader_session_factory
    from workers import context, rules_jobs

    original = rules_jobs._rows_plus_blobs
    calls = []

    def commit_first(s, *args):
        if not calls:
            other_worker()
        calls.append(1)
        return original(s, *args)

    monkeypatch.setattr(rules_jobs, "_rows_plus_blobs", commit_first)
    context.set_config(config)
    reader = reader_session_factory(db_url)()
    try:
        got = rules_jobs.read_sequential(reader, shop_id, None, "2011-12", 2)["pairs"]
    finally:
        reader.rollback()
        reader.close()
        context.set_config(None)
    return got, len(calls)


def test_sequential_read_is_exact_when_a_compaction_commits_during_it(config, session, db_url, monkeypatch):
    """rules_jobs.read_sequential reads blobs, then rows. A compaction committing in between (PostgreSQL's READ
    COMMITTED sees it; SQLite's read snapshot does not) would count the folded blobs twice: the reader sees its
    blobs gone and reads again."""
    from workers.sequential_jobs import compact_sequential_job

    versions, edits = retail_history()
    shop = _seq_shop(session, "seq-race.myshopify.com", versions + edits)
    window = _window_pairs(versions + edits)
    got, reads = _read_with_a_commit_in_between(config, db_url, monkeypatch, shop.id,
                                                lambda: compact_sequential_job(shop.id))
    assert got == {k: n for k, n in window.items() if n >= 2}
    assert reads == (2 if session.get_bind().dialect.name == "postgresql" else 1)


def test_sequential_read_is_exact_when_a_rebuild_commits_during_it(config, session, db_url, monkeypatch):
    """rules_jobs.read_sequential reads payloads (blobs, folded snapshots), then rows. A rebuild committing in
    between (PostgreSQL's READ COMMITTED sees it) replaces the payloads by rows: with no blob read, only the
    payloads' versions show it; the reader reads again instead of counting the folded payloads twice."""
    from workers.sequential_jobs import compact_sequential, rebuild_sequential_job

    versions, edits = retail_history()
    shop = _seq_shop(session, "seq-race-rebuild.myshopify.com", versions + edits)
    assert compact_sequential(session, shop.id) > 0                       # payloads only: no blob, no pair row
    session.commit()
    window = _window_pairs(versions + edits)
    got, reads = _read_with_a_commit_in_between(config, db_url, monkeypatch, shop.id,
                                                lambda: rebuild_sequential_job(shop.id))
    assert seq_payloads(session, shop.id) == 0
    assert got == {k: n for k, n in window.items() if n >= 2}
    assert reads == (2 if session.get_bind().dialect.name == "postgresql" else 1)


def test_background_phases_run_niced_and_writes_do_not(config, session, monkeypatch):
    """compact_shop and mine_rules read + compute in a thread niced by BACKGROUND_NICE and write from the calling
    thread at its own priority (a SQLite write-lock holder is never niced); results stay exact."""
    from workers import context, priority, rebuild_jobs, rules_jobs, sequential_jobs

    monkeypatch.setattr(priority, "BACKGROUND_NICE", 7)
    base = priority.thread_nice()
    seen: dict = {}

    def spy(name, fn):
        def wrapped(*a, **kw):
            seen.setdefault(name, set()).add(priority.thread_nice())
            return fn(*a, **kw)
        return wrapped

    for name in ("read_compaction", "apply_compaction"):
        monkeypatch.setattr(rebuild_jobs, name, spy(name, getattr(rebuild_jobs, name)))
    for name in ("read_sequential_compaction", "apply_sequential_compaction"):   # compact_sequential_job's phases
        monkeypatch.setattr(sequential_jobs, name, spy(name, getattr(sequential_jobs, name)))
    for name in ("read_window", "mine_window", "replace_rules"):
        monkeypatch.setattr(rules_jobs, name, spy(name, getattr(rules_jobs, name)))
    versions, edits = retail_history()
    shop = _seq_shop(session, "nice.myshopify.com", versions + edits)
    shop_id = shop.id
    expected = state(session, shop_id)[1]                       # the counts, exact before compaction
    assert expected == as_reference(clean_pass(versions + edits))[1]
    context.set_config(config)
    try:
        res = rebuild_jobs.compact_shop(shop_id)
        assert res["buckets"] >= 2 and res["sequential_folds"] >= 2 and res["write_s"] >= 0
        assert state(session, shop_id)[1] == expected
        assert rules_jobs.mine_rules(shop_id, now=NOW)["status"] == "done"
    finally:
        context.set_config(None)
    niced = min(19, base + 7)
    assert seen == {"read_compaction": {niced}, "apply_compaction": {base}, "read_sequential_compaction": {niced},
                    "apply_sequential_compaction": {base}, "read_window": {niced}, "mine_window": {niced},
                    "replace_rules": {base}}
    assert priority.thread_nice() == base

    def boom():
        raise KeyError("raised in the niced thread")
    try:
        priority.niced(boom)
    except KeyError as exc:
        assert "niced thread" in str(exc)
    else:
        raise AssertionError("the niced thread's exception must reach the caller")


def test_sequential_folds_premerged_outside_the_lock_stay_exact(session, monkeypatch):
    """premerge_sequential_folds computes each fold's new payload from the payloads as read (the lock then covers
    the deletes and one write): written as is while the bucket's payload is unchanged (no decode / add / encode
    under the lock), merged again under the lock when another fold changed it in between; exact both ways."""
    from shopify_app.models import SequentialPairBlob
    from workers import sequential_jobs
    from workers.sequential_jobs import apply_sequential_compaction, premerge_sequential_folds, read_sequential_compaction

    versions, edits = retail_history()
    cut = len(versions) // 2
    shop = _seq_shop(session, "seq-premerge.myshopify.com", versions[:cut])
    sizes = sorted(session.scalars(select(SequentialPairBlob.pairs).where(SequentialPairBlob.shop_id == shop.id)))
    limit = sizes[len(sizes) // 2]
    folds = premerge_sequential_folds(session, shop.id, read_sequential_compaction(session, shop.id, limit))
    session.commit()
    by_bucket: dict = {}
    for f in folds:
        by_bucket.setdefault(f.bucket, []).append(f)
    assert any(len(fs) > 1 for fs in by_bucket.values())          # chained folds of one bucket are exercised
    apply_batches(session, shop, versions[cut:])                   # more blobs, payloads untouched
    session.commit()
    expected = definition(versions)

    # one bucket with two folds: its second fold goes first, merged under the lock (not premerged) ...
    _bucket, (first, second, *_rest) = next((b, fs) for b, fs in by_bucket.items() if len(fs) > 1)
    plain = sequential_jobs.SequentialFold(second.bucket, second.blob_ids, second.sums)
    assert apply_sequential_compaction(session, shop.id, [plain]) == 1
    session.commit()
    # ... so the first fold's premerged payload was computed from a payload that is gone: merged again, exactly
    calls = []
    real_sum = sequential_jobs.sum_directed_pairs
    monkeypatch.setattr(sequential_jobs, "sum_directed_pairs", lambda parts: calls.append(1) or real_sum(parts))
    assert apply_sequential_compaction(session, shop.id, [first]) == 1
    session.commit()
    assert calls                                                   # the fallback merged under the lock
    assert tables(session, shop.id) == expected

    # a fresh read of what is left (the other folds' blobs and those written since): every payload it read is
    # still there when it writes, so nothing is merged under the lock
    again = premerge_sequential_folds(session, shop.id, read_sequential_compaction(session, shop.id, limit))
    session.commit()
    assert len(again) > len({f.bucket for f in again})             # chained again
    calls.clear()
    assert apply_sequential_compaction(session, shop.id, again) == len(again)
    session.commit()
    assert not calls
    assert tables(session, shop.id) == expected
    assert not session.scalars(select(SequentialPairBlob.id).where(SequentialPairBlob.shop_id == shop.id)).all()
