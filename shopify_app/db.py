"""Engine and session factory, usable without Flask (workers, CLI, Alembic, benches).

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` transactions so concurrent worker processes
serialize their writes instead of failing with "database is locked" half way through a transaction.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines are not fork-safe: workers call this after forking)."""
    eng = _engines.get(url)
    if eng is None:
        eng = _engines[url] = _create(url)
    return eng


SQLITE_BEGIN = "sqlite_begin"   # execution option: "deferred" for read-only sessions (see reader_session_factory)


def _create(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None      # let SQLAlchemy/`begin` below control transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            # 64 MB page cache and memory-mapped reads: the default 2 MB cache misses constantly on a big shop's
            # member pages (bench/bench_render.py).
            cur.execute("PRAGMA cache_size=-65536")
            cur.execute("PRAGMA mmap_size=268435456")
            cur.close()

        @event.listens_for(eng, "begin")
        def _sqlite_begin(conn):
            # Writers take the lock up front (no deadlock-prone read-then-upgrade); read-only work (page loads,
            # see `reader_session_factory`) begins deferred, so in WAL mode it reads a snapshot and never waits
            # for a worker's write transaction.
            if conn.get_execution_options().get(SQLITE_BEGIN) == "deferred":
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
        return eng
    if u.drivername == "postgresql":              # default to psycopg 3, which we ship
        u = u.set(drivername="postgresql+psycopg")
    return create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=10)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


def reader_session_factory(url: str) -> sessionmaker[Session]:
    """Sessions for requests that only read (GET pages, CSV): on SQLite their transactions begin deferred, so they
    never queue behind a worker's write lock. A write through such a session still works, but may fail fast with
    'database is locked' when another writer committed meanwhile: use `session_factory` for writes."""
    return sessionmaker(bind=get_engine(url).execution_options(**{SQLITE_BEGIN: "deferred"}), expire_on_commit=False)


def session_scope(url: str) -> contextlib.AbstractContextManager[Session]:
    """A transaction: commit on success, roll back on error."""
    return _scope(session_factory(url))


def reader_scope(url: str) -> contextlib.AbstractContextManager[Session]:
    """A read-only transaction (see `reader_session_factory`): commit (ends the snapshot) on success, roll back on
    error."""
    return _scope(reader_session_factory(url))


@contextlib.contextmanager
def _scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    for eng in _engines.values():
        eng.dispose()
    _engines.clear()


# --------------------------------------------------------------------------------------------- SQLite write turn
# SQLite has one writer. A writer that finds the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 .. 100 ms
# steps) however soon the lock is released, so a writer that commits and begins again at once (the order job,
# batch after batch) can starve one that polls (the webhook intake: deliveries timed out in bench (d)). The
# frequent writers therefore take this turn first: an flock on a file next to the database, which the kernel
# hands to a waiting process as soon as it is released. Other writers keep SQLite's busy handler.
_turns: dict[tuple[int, str], tuple[threading.Lock, int]] = {}
_turns_guard = threading.Lock()


@functools.lru_cache(maxsize=16)
def write_turn_path(url: str) -> str | None:
    """The lock file of a SQLite database file; None for other databases (and in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return u.database + ".write-turn"


@contextlib.contextmanager
def sqlite_write_turn(url: str) -> Iterator[None]:
    """On a SQLite file: exclusive across processes (flock) while a frequent writer writes; elsewhere a no-op.
    Take it *before* beginning the write transaction. The file is opened once per process (an flock belongs to
    the open file, so a descriptor inherited through fork would be shared with the parent: the key includes the
    pid); threads of a process take turns on a thread lock first. Not re-entrant."""
    path = write_turn_path(url)
    if path is None:
        yield
        return
    key = (os.getpid(), path)
    entry = _turns.get(key)
    if entry is None:
        with _turns_guard:
            entry = _turns.get(key)
            if entry is None:
                entry = _turns[key] = (threading.Lock(), os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    thread_lock, fd = entry
    with thread_lock:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
