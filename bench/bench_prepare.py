"""CPU of the order job's prepare phase, piece by piece, against a reference implementation in the same process.

Builds what bench/bench_order_batch.py --live builds (one shop on a fresh SQLite file, its history grown by
--history Online Retail orders applied by the job itself, then --rounds live-shaped batches of --orders orders,
each delivered twice: orders/create + orders/paid, identical bodies), runs every batch with the job's own
`run_batch` (items kept between batches as the draining job keeps them), and records the inputs of the pure pieces
of prepare_batch as the job called them:

- convert: JSON parse + shopify_app.shopify.convert.order_from_rest of each distinct body;
- apply_diff: analytics.incremental contribution + diff(expand_pairs=False) of each applied version;
- pair_payloads: analytics.counts.basket_change_pairs(indexed) + encode_pairs_indexed of the batch's basket
  changes;
- line_rows: workers.bulk_rows.line_rows / order_row of the applied versions;
- sequential_delta: analytics.sequential.summed_delta_arrays of the batch's (before, after) customer orders +
  workers.sequential_jobs.delta_payloads.

Each piece is then timed (thread CPU, best of --repeat) on the recorded inputs with the code of this checkout and
with the code of a reference commit (--ref, default: the commit before the prepare-cost work; read with
`git show`, so no copy of the old code lives here), and the two outputs are compared (equal, or the bench fails).
Reported: CPU seconds per 1,000 orders per piece, reference vs now, and the job's own prepare phase timings of the
measured batches (prepare_timings, which include the reads).

    .venv/bin/python bench/bench_prepare.py [--history 8000] [--orders 32] [--rounds 40] [--ref COMMIT]

Ends with one line: RESULT {json}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_freshness import load_invoices  # noqa: E402
from bench_order_batch import NOW, add_deliveries  # noqa: E402

from shopify_app.analytics import counts, incremental, sequential  # noqa: E402
from shopify_app.cli import upgrade_database  # noqa: E402
from shopify_app.db import session_factory  # noqa: E402
from shopify_app.models import Shop  # noqa: E402
from shopify_app.shopify import convert  # noqa: E402
from workers import bulk_rows, sequential_jobs  # noqa: E402

REF_COMMIT = "3a286d0"               # before the prepare-cost work (issue #5, stop 14)


def reference_module(commit: str, path: str, name: str) -> types.ModuleType:
    """The module at `path` as it was at `commit` (its imports resolve against this checkout)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True, capture_output=True,
                         text=True).stdout
    mod = types.ModuleType(name)
    mod.__file__ = f"{commit}:{path}"
    mod.__package__ = path.rsplit("/", 1)[0].replace("/", ".")    # its relative imports: this checkout's package
    sys.modules[name] = mod           # dataclasses look their module up while the class body runs
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


class Recorder:
    """Wraps the order job's module-level calls to keep their inputs (the job itself runs unchanged)."""

    def __init__(self):
        import workers.order_jobs as oj
        self.oj = oj
        self.batches: list[dict] = []
        self.current: dict | None = None
        self._orig = {}

    def start_batch(self) -> None:
        self.current = {"bodies": [], "versions": [], "changes": [], "seq": [], "days": None}
        self.batches.append(self.current)

    def install(self) -> None:
        oj = self.oj
        rec = self

        def _convert(topic, body, now, _orig=oj._convert):
            v = _orig(topic, body, now)
            if rec.current is not None and v is not None and body and oj._plain_version(topic):
                rec.current["bodies"].append(body)
            return v

        def pair_payloads(batch, _orig=oj.pair_payloads):
            if rec.current is not None:
                rec.current["changes"] = list(batch.basket_changes)
            return _orig(batch)

        def summed_deltas(changes, days, _orig=oj.summed_deltas):
            changes = [(list(b), list(a)) for b, a in changes]
            if rec.current is not None:
                rec.current["seq"], rec.current["days"] = changes, days
            return _orig(changes, days)

        for name, fn in (("_convert", _convert), ("pair_payloads", pair_payloads),
                         ("summed_deltas", summed_deltas)):
            self._orig[name] = getattr(oj, name)
            setattr(oj, name, fn)

    def uninstall(self) -> None:
        for name, fn in self._orig.items():
            setattr(self.oj, name, fn)


def cpu_best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        c0 = time.thread_time()
        out = fn()
        best = min(best, time.thread_time() - c0)
    return best, out


def same_arrays(x, y) -> bool:
    import numpy as np
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(same_arrays(x[k], y[k]) for k in x)
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(same_arrays(a, b) for a, b in zip(x, y))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x), np.asarray(y))
    return x == y


def decoded(payloads: list, decode) -> list:
    """Blob payloads compared by content (the zip container's bytes are not part of the contract)."""
    return [(b, n, decode(data)) for b, n, data in payloads]


def canonical(name: str, out):
    """A piece's output for the comparison: blob payloads by content (the zip container's bytes are no part of
    the contract), decoded outside the timed part."""
    if name == "pair_payloads":
        return decoded(out, counts.decode_pairs_indexed)
    if name == "sequential_delta" and out and out[1]:
        return out[0], decoded(out[1], sequential_jobs.decode_directed_pairs)
    return out


def pieces(mods: dict, batches: list, shop_id: int, now) -> dict:
    """{piece: callable(batch) -> comparable output} built on the modules `mods`."""
    cv, inc, cnt, seq, rows, sj = (mods[k] for k in ("convert", "incremental", "counts", "sequential", "bulk_rows",
                                                     "sequential_jobs"))

    def convert_(b):
        return [cv.order_from_rest(cv.parse_body(body)) for body in b["bodies"]]

    def apply_diff(b):
        out = []
        for v in b["versions"]:
            new = inc.contribution(v)
            d = inc.diff(None, new, expand_pairs=False)
            out.append((new, d.customers, d.items, d.baskets, d.basket_changes))
        return out

    def pair_payloads(b):
        return [(k, len(c), cnt.encode_pairs_indexed(ids, i, j, c, compress=True))
                for k, (ids, i, j, c) in cnt.basket_change_pairs(b["changes"], indexed=True).items()]

    def line_rows(b):
        return [(rows.order_row(shop_id, v, None, now), rows.line_rows(shop_id, v)) for v in b["versions"]]

    def sequential_delta(b):
        if not b["seq"]:
            return ([], [])
        items, pairs = seq.summed_delta_arrays(b["seq"], b["days"])
        return sj.delta_payloads(shop_id, items, pairs)

    return {"convert": convert_, "apply_diff": apply_diff, "pair_payloads": pair_payloads, "line_rows": line_rows,
            "sequential_delta": sequential_delta}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--history", type=int, default=8000, help="orders applied before measuring")
    ap.add_argument("--orders", type=int, default=32, help="orders per measured batch")
    ap.add_argument("--rounds", type=int, default=40, help="measured batches")
    ap.add_argument("--repeat", type=int, default=3, help="timings per piece (best kept)")
    ap.add_argument("--ref", default=REF_COMMIT, help="reference commit")
    ap.add_argument("--save", help="also pickle the recorded inputs here (to iterate with --load)")
    ap.add_argument("--load", help="time the pieces on inputs pickled by --save (no database run)")
    args = ap.parse_args()
    if args.load:
        import pickle
        with open(args.load, "rb") as f:
            saved = pickle.load(f)
        return compare(args, saved["batches"], saved["shop_id"], saved["measured"], saved.get("job_phases", {}))

    from shopify_app.config import Config
    from workers import context
    from workers.order_jobs import run_batch
    from workers.rebuild_jobs import compact_shop

    scratch = tempfile.mkdtemp(prefix="bench_prepare_")
    url = f"sqlite:///{scratch}/b.sqlite3"
    upgrade_database(url)
    context.set_config(Config(env="test", database_url=url))
    factory = session_factory(url)
    with factory() as s:
        shop = Shop(domain="prepare.myshopify.com", status="active", settings={})
        s.add(shop)
        s.commit()
        shop_id, domain = shop.id, shop.domain
    n = args.orders
    invoices = load_invoices(None, args.history + n * args.rounds, False, random.Random(1))
    products: dict[str, int] = {}
    items_cache: dict = {}
    rec = Recorder()
    rec.install()
    job_phases: dict = {}
    t0 = time.perf_counter()
    measured = 0
    for k, first in enumerate(range(0, args.history + n * args.rounds, n)):
        measure = first >= args.history
        if measure and not measured:
            print(f"history: {args.history} orders in {time.perf_counter() - t0:.1f} s", flush=True)
        batch = invoices[first:first + n]
        add_deliveries(factory, shop_id, domain, batch, 1000 + first, products, ("orders/create", "orders/paid"))
        if measure:
            rec.start_batch()
        res = run_batch(shop_id, limit=2 * n, now=NOW + dt.timedelta(seconds=1000 + first + n + 1),
                        items_cache=items_cache)
        rec.current = None
        assert res["applied"] == len(batch) and not res["more"], res
        if res.get("compact_counts"):
            compact_shop(shop_id)
        if measure:
            measured += res["applied"]
            for name, sec in res["prepare_timings"].items():
                job_phases[name] = job_phases.get(name, 0.0) + sec
    rec.uninstall()
    from shopify_app.db import dispose_all
    dispose_all()
    shutil.rmtree(scratch, ignore_errors=True)        # ~200 MB of database: the inputs are recorded
    if args.save:
        import pickle
        with open(args.save, "wb") as f:
            pickle.dump({"batches": rec.batches, "shop_id": shop_id, "measured": measured, "job_phases": job_phases}, f)
    compare(args, rec.batches, shop_id, measured, job_phases)


def compare(args, batches: list, shop_id: int, measured: int, job_phases: dict) -> None:
    n = args.orders
    for b in batches:                  # the versions the job converted (the same for both sides)
        b["versions"] = [convert.order_from_rest(convert.parse_body(body)) for body in b["bodies"]]

    ref = {name: reference_module(args.ref, path, f"_ref_{name}") for name, path in (
        ("convert", "shopify_app/shopify/convert.py"), ("incremental", "shopify_app/analytics/incremental.py"),
        ("counts", "shopify_app/analytics/counts.py"), ("sequential", "shopify_app/analytics/sequential.py"),
        ("bulk_rows", "workers/bulk_rows.py"), ("sequential_jobs", "workers/sequential_jobs.py"))}
    cur = {"convert": convert, "incremental": incremental, "counts": counts, "sequential": sequential,
           "bulk_rows": bulk_rows, "sequential_jobs": sequential_jobs}
    now = NOW
    ref_p, cur_p = pieces(ref, batches, shop_id, now), pieces(cur, batches, shop_id, now)
    per_k = 1000 / measured
    table, ok = {}, True
    for name in ref_p:
        t_ref = t_cur = 0.0
        for b in batches:
            a, out_ref = cpu_best(lambda: ref_p[name](b), args.repeat)
            c, out_cur = cpu_best(lambda: cur_p[name](b), args.repeat)
            t_ref, t_cur = t_ref + a, t_cur + c
            if not same_arrays(canonical(name, out_ref), canonical(name, out_cur)):
                ok = False
                print(f"MISMATCH in {name}", flush=True)
        table[name] = {"ref_s": round(t_ref * per_k, 4), "now_s": round(t_cur * per_k, 4),
                       "speedup": round(t_ref / t_cur, 2) if t_cur else None}
        print(f"{name:17s} ref {t_ref * per_k:.3f} s  now {t_cur * per_k:.3f} s per 1,000 orders", flush=True)
    phases = {k: round(v * per_k, 4) for k, v in job_phases.items()}
    print("job's prepare phases (s per 1,000 orders, this run's code): "
          + ", ".join(f"{k} {v}" for k, v in phases.items()), flush=True)
    print("RESULT " + json.dumps({"bench": "prepare", "history": args.history, "orders_per_batch": n,
                                  "batches": len(batches), "orders": measured, "ref": args.ref, "equal": ok,
                                  "pieces_cpu_s_per_1000_orders": table,
                                  "job_prepare_s_per_1000_orders": phases,
                                  "job_prepare_total_s_per_1000_orders": round(sum(phases.values()), 4)}))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
