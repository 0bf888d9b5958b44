"""gunicorn settings for the web app: `gunicorn -c python:shopify_app.gunicorn_conf 'shopify_app:create_app()'`.

Command-line flags still win over this file (e.g. `-w 4 --threads 16 -b 0.0.0.0:$PORT`). What it adds:

- `worker_class = "gthread"` with `threads = 8` per worker process: concurrent webhook deliveries of one process
  share one group commit (web/intake_batch.py), so a process needs several requests in flight; the number of
  worker processes comes from WEB_CONCURRENCY (gunicorn's own variable; default 2).
- **One BLAS thread per web process.** The admin pages import numpy/scipy/scikit-learn (read models, predictive
  summaries), and OpenBLAS then starts a thread per core that spins on the CPU looking for work whenever the
  process is busy: ~2 % of a loaded intake's CPU (perf, stop 15), for no use (no request does linear algebra).
  Set in the master before the workers import anything; an OPENBLAS_NUM_THREADS / OMP_NUM_THREADS already in the
  environment wins. The RQ workers are not started by gunicorn and keep their own settings.
- **`gc.freeze()` after a worker has loaded the app.** The app's import leaves ~190,000 objects tracked by the
  cyclic garbage collector (SQLAlchemy models, Flask, pandas, scikit-learn ...); every full collection walked them
  all again, ~3 % of a loaded intake's CPU (perf: gc_collect_main and its visitors). Frozen, they are out of the
  collector's way for the worker's life (they live that long anyway); objects made later are collected as usual.
"""
from __future__ import annotations

import gc
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

worker_class = "gthread"
threads = 8
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)


def post_worker_init(worker) -> None:
    """Called by gunicorn in each worker once the app is loaded (no --preload: each worker imports it)."""
    gc.collect()          # what import-time garbage there is goes now, not into the permanent generation
    gc.freeze()
