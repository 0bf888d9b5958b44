"""Engine and session factory, usable without Flask (workers, CLI, Alembic, benches).

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` transactions so concurrent worker processes
serialize their writes instead of failing with "database is locked" half way through a transaction.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines are not fork-safe: workers call this after forking)."""
    eng = _engines.get(url)
    if eng is None:
        eng = _engines[url] = _create(url)
    return eng


SQLITE_BEGIN = "sqlite_begin"   # execution option: "deferred" for read-only sessions (see reader_session_factory)


SQLITE_MMAP_SIZE = 268_435_456        # memory-mapped reads, per connection (the webhook intake's runs without)


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
            cur.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
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
_turns: dict[tuple[int, str], "WriteTurn"] = {}
_turns_guard = threading.Lock()


@functools.lru_cache(maxsize=16)
def write_turn_path(url: str) -> str | None:
    """The lock file of a SQLite database file; None for other databases (and in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return u.database + ".write-turn"


class WriteTurn:
    """The write turn of one SQLite file in this process: a thread lock (threads of the process take turns), then
    the flock (processes take turns). `acquire` and `release` may be called by different threads of the process:
    the intake's group commit passes a held turn from one leader thread to the next (intake_batch.GroupCommit).
    Not re-entrant."""
    __slots__ = ("_thread_lock", "_fd")

    def __init__(self, path: str):
        self._thread_lock = threading.Lock()          # a plain Lock: releasable by another thread, unlike RLock
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def write_turn(url: str) -> WriteTurn | None:
    """This process's write turn of a SQLite file (see `sqlite_write_turn`); None for other databases. The file is
    opened once per process (an flock belongs to the open file, so a descriptor inherited through fork would be
    shared with the parent: the key includes the pid)."""
    path = write_turn_path(url)
    if path is None:
        return None
    key = (os.getpid(), path)
    turn = _turns.get(key)
    if turn is None:
        with _turns_guard:
            turn = _turns.get(key)
            if turn is None:
                turn = _turns[key] = WriteTurn(path)
    return turn


@contextlib.contextmanager
def sqlite_write_turn(url: str) -> Iterator[None]:
    """On a SQLite file: exclusive across processes (flock) while a frequent writer writes; elsewhere a no-op.
    Take it *before* beginning the write transaction; threads of a process take turns on a thread lock first.
    Not re-entrant."""
    turn = write_turn(url)
    if turn is None:
        yield
        return
    turn.acquire()
    try:
        yield
    finally:
        turn.release()


# --------------------------------------------------------------------------------------------- SQLite checkpoints
class Checkpointer:
    """Copies the WAL back into the database file from a background thread of this process.

    SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL pages and, with synchronous=NORMAL,
    fsyncs the WAL and the database file there: tens of milliseconds on a VM disk, while the intake's write lock
    is held and a whole batch of requests waits. The intake's connections switch it off (PRAGMA
    wal_autocheckpoint=0 on each of them) and this thread runs `wal_checkpoint(PASSIVE)` every `rows_per_checkpoint`
    recorded rows instead: a passive checkpoint never blocks a writer.

    The WAL file starts over only when a writer begins while every frame is already copied. Under a steady stream
    of writes one pass never gets there (frames keep being appended while it copies), so a pass is followed by up to
    `passes - 1` more, each copying what was appended during the previous one (shorter and shorter): one that finds
    nothing new appended (or the WAL already restarted) is done. Only when that does not happen and the WAL has
    grown past `restart_frames` is a catch-up asked for (`catch_up_due`): the intake's next batch, after its commit
    and still holding the write turn, copies the few remaining frames (`catch_up`), so that the next writer starts
    the WAL over. (Before: every 10th checkpoint this thread took the write turn itself for a catch-up: 30-50 ms
    of held writers on a loaded 2-core machine, a stall at the intake's p99.) The thread runs at a lower CPU
    priority (nice +10, best effort): its copying is background work and never holds anything a writer needs.
    Used by the webhook intake (`wrote` after each batch) and by the order job (`poke` after each batch: its write
    connection runs without the automatic checkpoint too, workers.order_jobs._write_connection); other workers
    keep SQLite's automatic checkpoint on their own connections."""
    _by_key: dict[tuple[int, str], "Checkpointer"] = {}
    _guard = threading.Lock()

    def __init__(self, url: str, rows_per_checkpoint: int = 200, restart_frames: int = 16384, passes: int = 3):
        self.url = url
        self.rows_per_checkpoint = rows_per_checkpoint
        self.restart_frames = restart_frames          # 64 MB of WAL at the default 4 KB page
        self.passes = passes
        self._rows = 0
        self._due = threading.Event()
        self.catch_up_due = False
        self.checkpoints = 0                          # counters for tests and benches
        self.caught_up = 0                            # checkpoints that left the WAL free to start over
        self.catch_ups = 0
        threading.Thread(target=self._run, name="wal-checkpointer", daemon=True).start()

    @classmethod
    def of(cls, url: str) -> "Checkpointer":
        key = (os.getpid(), url)                 # a thread does not survive a fork: one per process
        cp = cls._by_key.get(key)
        if cp is None:
            with cls._guard:
                cp = cls._by_key.get(key)
                if cp is None:
                    cp = cls._by_key[key] = cls(url)
        return cp

    def wrote(self, rows: int) -> None:
        self._rows += rows                       # a lost update under a race only delays one checkpoint
        if self._rows >= self.rows_per_checkpoint:
            self._rows = 0
            self._due.set()

    def poke(self) -> None:
        """A writer that does not count rows (the order job, after each batch): checkpoint now."""
        self._due.set()

    def catch_up(self, engine) -> None:
        """Called by a writer right after its commit, while it still holds the write turn (so no intake writer
        appends meanwhile): copy what the background passes left."""
        self.catch_up_due = False
        try:
            raw = engine.raw_connection()
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.catch_ups += 1
            finally:
                raw.close()
        except Exception as exc:               # noqa: BLE001 - the batch is committed; the next one may retry
            self.catch_up_due = True
            log.warning("WAL catch-up failed (%s: %s)", type(exc).__name__, exc)

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):         # not Linux, or not allowed: normal priority
            pass
        while True:
            self._due.wait()
            self._due.clear()
            try:
                raw = get_engine(self.url).raw_connection()
                try:
                    self._checkpoint(raw.cursor())
                finally:
                    raw.close()
            except Exception as exc:            # noqa: BLE001 - a missed checkpoint is retried at the next one
                log.warning("WAL checkpoint failed (%s: %s)", type(exc).__name__, exc)

    def _checkpoint(self, cur) -> None:
        busy, wal_frames, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        for _ in range(self.passes - 1):
            if busy:                            # another process's checkpoint is running: it does the work
                return
            busy, frames, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and (frames < wal_frames or (frames == wal_frames and copied == frames)):
                self.caught_up += 1             # restarted meanwhile, or all copied with nothing appended
                return
            wal_frames = frames
        if not busy and wal_frames >= self.restart_frames:
            self.catch_up_due = True
