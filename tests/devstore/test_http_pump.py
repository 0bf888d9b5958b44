"""Background delivery with several connections goes through one pump thread (http_pump.py): real sockets, the
HTTP answers an app can give (lengths, chunked, read-to-close, interim 1xx, closed keep-alive), timeouts,
refused connections, retries, keep-alive reuse, and every delivery still signed and recorded."""
import base64
import hashlib
import hmac
import json
import socket
import threading
import time

import pytest
from devstore_testlib import API_SECRET, SHOP


class RawServer:
    """A TCP server answering each request with `answer(request_number)` bytes (None: never answer; b"": close
    the connection without answering); with close_after, it closes the connection after every answer without
    saying so."""

    def __init__(self, answer, close_after=False):
        self.answer, self.close_after = answer, close_after
        self.requests = []            # (client port, headers dict, body)
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/webhooks"
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.alive:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, addr[1]), daemon=True).start()

    def _serve(self, conn, port):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                n = int(headers["content-length"])
                while len(buf) < n:
                    buf += conn.recv(65536)
                body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.requests.append((port, headers, body))
                    k = len(self.requests)
                reply = self.answer(k)
                if reply == b"":
                    return
                if reply is None:
                    time.sleep(2)
                    return
                conn.sendall(reply)
                if self.close_after or b"Connection: close" in reply or reply.startswith(b"HTTP/1.0"):
                    return

    def close(self):
        self.alive = False
        self.sock.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _deliver(store, url, n=1, **mode):
    store.webhooks.configure(sync=False, retry_schedule=mode.pop("retry_schedule", ()), **mode)
    store.subscribe_webhook(SHOP, "orders/create", url)
    p = store.create_product(SHOP, title="Mug", price="9.50")
    ids = [store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}]).id for _ in range(n)]
    assert store.webhooks.wait_idle(10)
    return ids


@pytest.fixture
def pumped(store):
    store.webhooks.configure(threads=4)
    assert store.webhooks._uses_pump()
    yield store
    store.webhooks.stop()


def test_pump_delivers_concurrently_over_reused_keep_alive_connections(pumped):
    srv = RawServer(lambda k: OK)
    try:
        ids = _deliver(pumped, srv.url, n=40)
        assert sorted(json.loads(b)["id"] for _, _, b in srv.requests) == sorted(ids)
        assert len({port for port, _, _ in srv.requests}) <= 4          # at most `threads` connections
        for _, h, body in srv.requests:
            digest = base64.b64encode(hmac.new(API_SECRET.encode(), body, hashlib.sha256).digest()).decode()
            assert h["x-shopify-hmac-sha256"] == digest and h["x-shopify-topic"] == "orders/create"
            assert h["content-type"] == "application/json" and h["host"] == srv.url.split("/")[2]
        attempts = pumped.webhooks.attempts
        assert [a.status for a in attempts] == [200] * 40
        assert sorted(a.resource_id for a in attempts) == sorted(ids)
        assert [t.name for t in threading.enumerate() if t.name.startswith("devstore-webhooks")] == \
            ["devstore-webhooks-pump"]
    finally:
        srv.close()


@pytest.mark.parametrize("reply,status", [
    (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 201),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n", 200),
    (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the server closes", 200),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200),
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", 500),
])
def test_pump_reads_every_kind_of_answer_and_keeps_the_connection_usable(pumped, reply, status):
    srv = RawServer(lambda k: reply)
    try:
        _deliver(pumped, srv.url, n=3)
        assert [a.status for a in pumped.webhooks.attempts] == [status] * 3
        assert all(a.error is None for a in pumped.webhooks.attempts)
    finally:
        srv.close()


def test_pump_drops_idle_connections_the_server_closed(pumped):
    srv = RawServer(lambda k: OK, close_after=True)       # closes after each answer without saying so
    try:
        _deliver(pumped, srv.url, n=1)
        p = pumped.create_product(SHOP, title="Cup", price="3.00")
        for _ in range(3):                                 # one at a time, after the server closed the last one
            time.sleep(0.05)
            pumped.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
            assert pumped.webhooks.wait_idle(5)
        assert [a.status for a in pumped.webhooks.attempts] == [200] * 4
        assert len(srv.requests) == 4                      # each on a fresh connection, none lost
        assert len({port for port, _, _ in srv.requests}) == 4
        # the closed idle connections are dropped once the pump reads the server's EOF, which may arrive just after
        # the answer wait_idle saw: wait for it (a pump that never drops them fails here)
        deadline = time.monotonic() + 5
        while any(pumped.webhooks._pump.idle.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(pumped.webhooks._pump.idle.values())
    finally:
        srv.close()


def test_pump_resends_once_on_a_keep_alive_connection_the_server_closed(pumped):
    """The server closes a reused connection as the request arrives (its idle close crossed the request):
    the request goes again on a fresh connection, one attempt as far as anyone can see."""
    srv = RawServer(lambda k: b"" if k == 2 else OK)      # the 2nd request: closed without an answer
    try:
        _deliver(pumped, srv.url, n=1)
        p = pumped.create_product(SHOP, title="Cup", price="3.00")
        pumped.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
        assert pumped.webhooks.wait_idle(5)
        assert [(a.status, a.attempt) for a in pumped.webhooks.attempts] == [(200, 1), (200, 1)]
        (p1, _, b1), (p2, _, b2), (p3, _, b3) = srv.requests
        assert p1 == p2 != p3 and b2 == b3                 # reused, then resent on a fresh connection
    finally:
        srv.close()


def test_pump_times_out_retries_and_reports_refused_connections(pumped):
    srv = RawServer(lambda k: None if k == 1 else OK)    # the first request never gets an answer
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    refused_url = f"http://127.0.0.1:{free.getsockname()[1]}/webhooks"
    free.close()
    try:
        _deliver(pumped, srv.url, n=1, timeout=0.3, retry_schedule=(0.05,))
        a1, a2 = pumped.webhooks.attempts
        assert a1.status is None and a1.error.startswith("TimeoutError") and a2.status == 200
        assert a2.webhook_id == a1.webhook_id and a2.attempt == 2
        pumped.webhooks.attempts.clear()
        pumped.shop(SHOP).webhook_subscriptions.clear()
        _deliver(pumped, refused_url, n=1, retry_schedule=(0.05,))
        assert [a.attempt for a in pumped.webhooks.attempts] == [1, 2]
        assert all(a.status is None and "ConnectionRefused" in a.error for a in pumped.webhooks.attempts)
    finally:
        srv.close()


def test_pump_wakes_for_new_work_and_stops(store):
    srv = RawServer(lambda k: OK)
    try:
        _deliver(store, srv.url, n=1, threads=3)
        time.sleep(0.2)                     # the pump sleeps in its poll with no deadline: only a wake-up helps
        p = store.create_product(SHOP, title="Cup", price="3.00")
        store.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
        deadline = time.monotonic() + 3
        while len(srv.requests) < 2:
            assert time.monotonic() < deadline, "the new delivery did not wake the pump"
            time.sleep(0.01)
        store.webhooks.stop()
        deadline = time.monotonic() + 3
        while any(t.name == "devstore-webhooks-pump" and t.is_alive() for t in threading.enumerate()):
            assert time.monotonic() < deadline, "stop() did not end the pump"
            time.sleep(0.01)
    finally:
        srv.close()


def test_an_idle_pump_gets_new_deliveries_started_by_the_emitting_thread(pumped):
    """While the pump thread waits in its poll, a new delivery is sent by the thread that emits it (no wake-up
    of the pump thread for that); the pump thread still reads the answer, records the attempt and retries."""
    srv = RawServer(lambda k: b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n" if k == 2 else OK)
    try:
        _deliver(pumped, srv.url, n=1, retry_schedule=(0.05,))
        time.sleep(0.1)                                    # the pump is in its poll
        wakes = []
        real_wake = pumped.webhooks._pump.wake
        pumped.webhooks._pump.wake = lambda: wakes.append(1) or real_wake()
        p = pumped.create_product(SHOP, title="Cup", price="3.00")
        emitter = threading.get_ident()
        sent_by = []
        real_start = pumped.webhooks._pump.start
        pumped.webhooks._pump.start = lambda *a: sent_by.append(threading.get_ident()) or real_start(*a)
        pumped.create_order(SHOP, lines=[{"variant_id": p.variants[0].id, "quantity": 1}])
        assert pumped.webhooks.wait_idle(5)
        assert [(a.status, a.attempt) for a in pumped.webhooks.attempts] == [(200, 1), (500, 1), (200, 2)]
        assert sent_by[0] == emitter and sent_by[1] != emitter  # the retry: sent by the pump thread
        assert wakes == []
        assert len(srv.requests) == 3
    finally:
        srv.close()
