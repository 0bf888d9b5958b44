"""Leaky bucket per (app, shop), like Shopify's GraphQL Admin API rate limit.

Each request needs its *requested* cost available up front, then is charged its *actual* cost (Shopify refunds
the difference). The bucket refills continuously at `restore_rate` points per second up to `maximum`.
"""
from __future__ import annotations

import threading
import time

DEFAULT_BUCKET = 2000.0   # Standard plan, per /work/shared/shopify/README.md and the issue
DEFAULT_RESTORE = 100.0
MAX_SINGLE_QUERY_COST = 1000


class Throttle:
    def __init__(self, bucket_size: float | None = None, restore_rate: float | None = None, clock=time.monotonic):
        self.bucket_size = float(bucket_size or DEFAULT_BUCKET)
        self.restore_rate = float(restore_rate or DEFAULT_RESTORE)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}   # key -> (available, at)

    def configure(self, bucket_size: float | None = None, restore_rate: float | None = None) -> None:
        with self._lock:
            if bucket_size is not None:
                self.bucket_size = float(bucket_size)
            if restore_rate is not None:
                self.restore_rate = float(restore_rate)
            self._buckets.clear()

    def _level(self, key) -> float:
        avail, at = self._buckets.get(key, (self.bucket_size, self.clock()))
        t = self.clock()
        return min(self.bucket_size, avail + (t - at) * self.restore_rate)

    def available(self, key) -> float:
        with self._lock:
            return self._level(key)

    def try_acquire(self, key, requested: float) -> tuple[bool, float]:
        """Take `requested` points if available. Returns (ok, currently available afterwards)."""
        with self._lock:
            level = self._level(key)
            if level < requested:
                self._buckets[key] = (level, self.clock())
                return False, level
            level -= requested
            self._buckets[key] = (level, self.clock())
            return True, level

    def refund(self, key, points: float) -> float:
        with self._lock:
            level = min(self.bucket_size, self._level(key) + max(0.0, points))
            self._buckets[key] = (level, self.clock())
            return level

    def status(self, key) -> dict:
        return {"maximumAvailable": self.bucket_size, "currentlyAvailable": int(self.available(key)),
                "restoreRate": self.restore_rate}
