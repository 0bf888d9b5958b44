"""Injectable faults for the admin API (GraphQL and token endpoints), one-shot or for the next N requests.

    store.faults.add("http_429", count=2, retry_after=1)
    store.faults.add("http_500"); store.faults.add("http_503")
    store.faults.add("slow", delay=0.5)
    store.faults.add("drop")                 # close the socket without any response
    store.revoke_shop_tokens(shop)           # 401 like a revoked/uninstalled token

Also over HTTP: POST /devstore/faults {"kind": "http_429", "count": 2, "retry_after": 1, "shop": optional}
and DELETE /devstore/faults.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

KINDS = ("http_429", "http_500", "http_503", "slow", "drop")


@dataclass
class Fault:
    kind: str
    count: int = 1
    retry_after: float = 1.0
    delay: float = 0.0
    shop: str | None = None       # None = any shop
    path_contains: str = "/admin/"


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self.pending: list[Fault] = []
        self.fired: list[tuple[str, str]] = []   # (kind, path) for assertions

    def add(self, kind: str, count: int = 1, **kw) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {KINDS}")
        f = Fault(kind=kind, count=count, **kw)
        with self._lock:
            self.pending.append(f)
        return f

    def clear(self) -> None:
        with self._lock:
            self.pending.clear()

    def take(self, shop: str | None, path: str) -> Fault | None:
        """The fault that applies to this request, consuming one of its count."""
        with self._lock:
            for f in self.pending:
                if (f.shop is None or f.shop == shop) and f.path_contains in path:
                    f.count -= 1
                    if f.count <= 0:
                        self.pending.remove(f)
                    self.fired.append((f.kind, path))
                    return f
        return None
