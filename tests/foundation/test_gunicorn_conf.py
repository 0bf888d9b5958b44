"""The production gunicorn config module (shopify_app/gunicorn_conf.py): what it sets, in a fresh interpreter each
(it changes the process environment and the garbage collector)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def _run(code: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                         env={**{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
                              **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_one_blas_thread_by_default_and_the_environment_wins():
    code = """
        import os
        import shopify_app.gunicorn_conf as conf
        print(os.environ["OPENBLAS_NUM_THREADS"], os.environ["OMP_NUM_THREADS"], conf.worker_class, conf.threads)
    """
    assert _run(code) == "1 1 gthread 8"
    assert _run(code, {"OPENBLAS_NUM_THREADS": "4"}).split()[0] == "4"


def test_workers_follow_web_concurrency():
    code = "import shopify_app.gunicorn_conf as conf; print(conf.workers)"
    assert _run(code) == "2"
    assert _run(code, {"WEB_CONCURRENCY": "5"}) == "5"


def test_post_worker_init_freezes_what_the_app_import_made():
    out = _run("""
        import gc
        import shopify_app.gunicorn_conf as conf
        from shopify_app import create_app
        before = gc.get_freeze_count()
        conf.post_worker_init(None)
        print(before, gc.get_freeze_count())
    """, {"SECRET_KEY": "x" * 32})
    before, after = map(int, out.split())
    assert before == 0 and after > 10_000
