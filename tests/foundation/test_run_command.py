"""`python -m shopify_app.runner` (what `make run` starts) brings up redis, web, workers and the scheduler with
no other set-up, answers on PORT, and stops every child on Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import redis
from rq import Worker

from shopify_app.config import PROJECT_ROOT
from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_run_command_starts_everything_and_stops_on_ctrl_c(tmp_path):
    port, store_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SHOPIFY_API_KEY")}
    env.update(PORT=str(port), DEVSTORE_PORT=str(store_port), INSTANCE_PATH=str(tmp_path / "instance"),
               DEMO_SEED="none")
    # Its own process group, as in a terminal: Ctrl-C is sent to the whole foreground group (runner and anything
    # it started in that group), not to the runner alone.
    proc = subprocess.Popen([sys.executable, "-m", "shopify_app.runner"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        health = wait_for(lambda: _health(port), timeout=90, message="the web app on PORT")
        assert health["checks"] == {"database": "ok", "redis": "ok"}
        sock = tmp_path / "instance" / "redis" / "redis.sock"
        conn = redis.Redis(unix_socket_path=str(sock))
        workers = wait_for(lambda: len(Worker.all(connection=conn)) >= 2 and Worker.all(connection=conn),
                           timeout=60, message="two RQ workers")
        queues = sorted(q for w in workers for q in w.queue_names())
        assert queues == ["sb:default", "sb:default", "sb:models", "sb:webhooks"]
        assert wait_for(lambda: conn.keys("rq:cron_scheduler:*"), timeout=30, message="the cron scheduler")
        assert (tmp_path / "instance" / "segments.sqlite3").exists()
        # Demo mode installed the app into the stand-in's shop by token exchange and ran the history import.
        from sqlalchemy import select

        from shopify_app.db import session_scope
        from shopify_app.models import Job, Shop

        db = f"sqlite:///{tmp_path / 'instance' / 'segments.sqlite3'}"

        def imported():
            with session_scope(db) as s:
                shop = s.scalar(select(Shop).where(Shop.domain == "demo.myshopify.com"))
                job = shop and s.scalar(select(Job).where(Job.shop_id == shop.id, Job.kind == "import"))
                return shop and shop.status == "active" and shop.access_token_enc and job and job.status == "done"

        wait_for(imported, timeout=60, message="the demo install and history import")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    # A clean stop: Redis outlives the workers' and scheduler's warm shutdown (they still talk to it).
    assert "Traceback" not in out and "could not connect to Redis" not in out, out
    assert "Segments & Bundles is running" in out
    # Every child is gone: nothing answers on the ports any more.
    assert _health(port) is None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", store_port)) != 0
    assert wait_for(lambda: not _processes_with_instance(tmp_path / "instance"), timeout=20,
                    message="no orphaned child (RQ work horses included)")


def _processes_with_instance(instance) -> list[int]:
    marker = f"INSTANCE_PATH={instance}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found
