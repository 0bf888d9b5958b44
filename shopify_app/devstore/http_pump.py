"""Concurrent webhook POSTs from ONE thread: non-blocking HTTP/1.1 keep-alive connections and a selector.

Why not one blocking thread per concurrent delivery: the stand-in plays Shopify inside a bench's own process on a
2-core machine, and with 16 delivery threads every request hands the GIL back and forth (~9 context switches and
~0.5 ms of CPU per webhook, a third of the stand-in's cost). One thread multiplexing up to `limit` connections
keeps the concurrency (deliveries are in flight together and finish in any order, as Shopify's do) at ~2 switches
per webhook.

The HTTP is deliberately small: POST with Content-Length, answers with Content-Length, chunked, or
read-to-close bodies; 1xx interim answers skipped; keep-alive unless the answer says close (or is HTTP/1.0
without keep-alive). A keep-alive connection the server closed while idle is reopened once and the request sent
again (deliveries are at-least-once anyway). https URLs are not multiplexed: they go through the blocking
`fallback` transport inside the pump thread.

A connection stays registered with the selector for reading from connect to close, idle in the pool too: a request
costs no selector calls unless its send would block (then it waits for writability), and an idle connection the
server closes is noticed and dropped before a request is sent on it.
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections import deque
from urllib.parse import urlsplit

_READ_SIZE = 65536


class _Conn:
    __slots__ = ("key", "sock", "request", "sent", "buf", "reused", "connected", "item", "deadline", "head_end",
                 "status", "length", "chunked", "close", "got_bytes", "events", "fd")

    def __init__(self, key, sock, reused):
        self.key, self.sock, self.reused = key, sock, reused
        self.connected = reused
        self.request = b""
        self.sent = 0
        self.buf = bytearray()
        self.item = None
        self.deadline = 0.0
        self.head_end = -1
        self.status = None
        self.length = None
        self.chunked = False
        self.close = False
        self.got_bytes = False
        self.events = 0                          # what the selector watches for (0: not registered)
        self.fd = sock.fileno()


def _request_bytes(parts, headers: dict, body: bytes) -> bytes:
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept-Encoding: identity",
             f"Content-Length: {len(body)}"]
    for k, v in headers.items():
        v = str(v)
        if "\r" in v or "\n" in v or "\r" in k or "\n" in k:     # as http.client: no header injection
            raise ValueError(f"Invalid header {k!r}: {v!r}")
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _chunked_end(buf: bytearray, start: int) -> int:
    """End offset of a complete chunked body starting at `start`, or -1 while incomplete."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            if buf[pos:pos + 2] == b"\r\n":
                return pos + 2
            end = buf.find(b"\r\n\r\n", pos)            # trailers, then the empty line
            return -1 if end < 0 else end + 4
        if len(buf) < pos + size + 2:
            return -1
        pos += size + 2


class HttpPump:
    """Start requests with `start(item, url, headers, body, timeout)` (at most `limit` in flight: `free()`),
    then `poll(timeout)` returns [(item, status, error)] for those that finished. `wake()` (any thread) ends a
    poll early; `close()` drops every connection.

    Not thread-safe, except that poll's waiting part can run apart: `wait_time`, then `select` (touches no
    state: another thread, holding the caller's lock, may `start` requests meanwhile; the selector sees their
    sockets at once), then `handle`. The caller holds its lock for all but `select`."""

    def __init__(self, limit: int, fallback):
        self.limit = max(1, int(limit))
        self.fallback = fallback                  # blocking transport for https
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.active: dict[int, _Conn] = {}       # fileno -> connection with a request in flight
        self.idle: dict[tuple, deque] = {}       # (host, port) -> keep-alive connections ready for reuse
        self.done: list = []
        self._addr: dict[tuple, tuple] = {}

    # ------------------------------------------------------------------------------------------------ API
    def free(self) -> int:
        return self.limit - len(self.active)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass                                   # the pipe is full: a wake-up is pending anyway

    def start(self, item, url: str, headers: dict, body: bytes, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            try:
                self.done.append((item, int(self.fallback(url, headers, body, timeout)), None))
            except Exception as exc:  # noqa: BLE001 - a failed attempt, like the threaded transport's
                self.done.append((item, None, f"{type(exc).__name__}: {exc}"))
            return
        try:
            request = _request_bytes(parts, headers, body)
        except ValueError as exc:
            self.done.append((item, None, f"{type(exc).__name__}: {exc}"))
            return
        key = (parts.hostname, parts.port or 80)
        self._send(item, key, request, timeout, allow_reuse=True)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.active.values()), default=None)

    def poll(self, timeout: float | None) -> list:
        """Wait up to `timeout` seconds (None: until something happens) and progress every connection."""
        return self.handle(self.select(self.wait_time(timeout)))

    def wait_time(self, timeout: float | None) -> float | None:
        """`timeout`, shortened to the next request deadline (0 if finished requests wait to be returned)."""
        if self.done:
            return 0
        deadline = self.next_deadline()
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    def select(self, timeout: float | None) -> list:
        return self.sel.select(timeout)

    def handle(self, ready: list) -> list:
        """Progress the connections `select` found ready, fail those past their deadline, and return the
        finished requests as [(item, status, error)]."""
        for key, events in ready:
            conn = key.data
            if conn is None:
                try:
                    while len(self._wake_r.recv(4096)) == 4096:
                        pass
                except (BlockingIOError, OSError):
                    pass
                continue
            if not conn.events:                     # dropped since the select
                continue
            if events & selectors.EVENT_WRITE and conn.item is not None:
                self._on_writable(conn)
            if events & selectors.EVENT_READ and conn.events:   # (not dropped by _on_writable)
                if conn.item is None:
                    self._idle_event(conn)
                else:
                    self._on_readable(conn)
        if self.active:
            now = time.monotonic()
            for conn in [c for c in self.active.values() if c.deadline <= now]:
                self._fail(conn, "TimeoutError: timed out")
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        for conn in list(self.active.values()):
            self._drop(conn)
        for pool in self.idle.values():
            for conn in pool:
                self._drop(conn)
        self.idle.clear()
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------------------------------------ internals
    def _send(self, item, key, request: bytes, timeout: float, allow_reuse: bool) -> None:
        pool = self.idle.get(key)
        conn = pool.pop() if (allow_reuse and pool) else None
        if conn is None:
            try:
                conn = self._connect(key)
            except OSError as exc:
                self.done.append((item, None, f"{type(exc).__name__}: {exc}"))
                return
        conn.item, conn.request, conn.sent = item, request, 0
        conn.buf.clear()
        conn.head_end, conn.status, conn.length, conn.chunked, conn.close, conn.got_bytes = -1, None, None, \
            False, False, False
        conn.deadline = time.monotonic() + timeout
        self.active[conn.fd] = conn
        if conn.connected:
            self._on_writable(conn)               # usually the whole request goes out at once

    def _connect(self, key) -> _Conn:
        addr = self._addr.get(key)
        if addr is None:
            family, _, _, _, sockaddr = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)[0]
            addr = self._addr[key] = (family, sockaddr)
        sock = socket.socket(addr[0], socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr[1])
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            raise OSError(err, os.strerror(err))
        conn = _Conn(key, sock, reused=False)
        conn.connected = err == 0
        # Registered until closed; writability only while connecting (or while a send would block).
        self._watch(conn, selectors.EVENT_READ if conn.connected else selectors.EVENT_READ | selectors.EVENT_WRITE)
        return conn

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if conn.events:
            self.sel.modify(conn.sock, events, conn)
        else:
            self.sel.register(conn.sock, events, conn)
        conn.events = events

    def _on_writable(self, conn: _Conn) -> None:
        if not conn.connected:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                exc = OSError(err, os.strerror(err))
                if err == errno.ECONNREFUSED:
                    exc = ConnectionRefusedError(err, os.strerror(err))
                return self._fail(conn, f"{type(exc).__name__}: {exc}")
            conn.connected = True
        try:
            while conn.sent < len(conn.request):
                n = conn.sock.send(memoryview(conn.request)[conn.sent:] if conn.sent else conn.request)
                conn.sent += n
        except BlockingIOError:
            return self._watch(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)   # the rest when writable
        except OSError as exc:
            return self._broken(conn, exc)
        self._watch(conn, selectors.EVENT_READ)

    def _idle_event(self, conn: _Conn) -> None:
        """An idle keep-alive connection became readable: the server closed it (or sent what nobody asked for).
        Dropped now, so no request is sent on it."""
        pool = self.idle.get(conn.key)
        if pool is not None and conn in pool:
            pool.remove(conn)
        self._drop(conn)

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            return self._broken(conn, exc)
        if not data:
            if conn.head_end >= 0 and conn.length is None and not conn.chunked:
                conn.close = True                  # body delimited by the server closing
                return self._complete(conn)
            return self._broken(conn, ConnectionResetError("Remote end closed connection without response")
                                if not conn.got_bytes else
                                ConnectionResetError("connection closed mid-response"))
        conn.got_bytes = True
        conn.buf += data
        try:
            self._parse(conn)
        except (ValueError, IndexError) as exc:
            self._fail(conn, f"BadStatusLine: {exc}")

    def _parse(self, conn: _Conn) -> None:
        buf = conn.buf
        while conn.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            version, status = head[0].split(" ", 2)[:2]
            status = int(status)
            if 100 <= status < 200:                 # interim answer: the real one follows
                del buf[:end + 4]
                continue
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            conn.status, conn.head_end = status, end + 4
            conn.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            if not conn.chunked and "content-length" in fields:
                conn.length = int(fields["content-length"])
            connection = fields.get("connection", "").lower()
            conn.close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if conn.chunked:
            if _chunked_end(buf, conn.head_end) >= 0:
                self._complete(conn)
        elif conn.length is not None:
            if len(buf) - conn.head_end >= conn.length:
                self._complete(conn)

    def _complete(self, conn: _Conn) -> None:
        self.active.pop(conn.fd, None)
        self.done.append((conn.item, conn.status, None))
        unsent = conn.sent < len(conn.request)        # answered before it had all the request: not reusable
        conn.item, conn.request = None, b""
        if conn.close or unsent:
            self._drop(conn)
        else:
            conn.reused = True
            pool = self.idle.setdefault(conn.key, deque())
            pool.append(conn)
            while len(pool) > self.limit:
                self._drop(pool.popleft())

    def _broken(self, conn: _Conn, exc: Exception) -> None:
        if conn.reused and not conn.got_bytes:
            # The idle keep-alive connection was closed by the server: once more, on a fresh connection.
            item, request, timeout = conn.item, conn.request, max(0.0, conn.deadline - time.monotonic())
            self._drop(conn)
            return self._send(item, conn.key, request, timeout, allow_reuse=False)
        self._fail(conn, f"{type(exc).__name__}: {exc}")

    def _fail(self, conn: _Conn, error: str) -> None:
        self._drop(conn)
        self.done.append((conn.item, None, error))

    def _drop(self, conn: _Conn) -> None:
        self.active.pop(conn.fd, None)
        if conn.events:
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.events = 0
        conn.sock.close()
