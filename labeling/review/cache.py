"""The process-memory LRU that the queue's ranked runs and the feed's columns and encoded
payloads share, bounded by their bytes; one thread builds a missing entry while the others wait."""

from __future__ import annotations

import threading
from collections import OrderedDict

CACHE_BYTES = 512 * 1024 * 1024


class _Cache:
    """Process-memory LRU of ranked runs and feed columns, bounded by their numpy bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        if isinstance(value, tuple):
            return sum(len(v) for v in value if isinstance(v, bytes)) + 1024
        parts = value.values() if isinstance(value, dict) else vars(value).values()
        return sum(getattr(p, "nbytes", 0) for p in parts) + 1024

    def get(self, key):
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return None if hit is None else hit[0]

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = (value, self._size(value))
            total = sum(size for _, size in self.items.values())
            while len(self.items) > 1 and total > self.max_bytes:
                _, (_, size) = self.items.popitem(last=False)
                total -= size

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_cache = _Cache(CACHE_BYTES)
_building: dict = {}
_building_lock = threading.Lock()


def cached(key, build):
    """The value under ``key``, made by ``build()`` when missing (one thread per key builds)."""
    hit = _cache.get(key)
    if hit is not None:
        return hit
    with _building_lock:
        building = _building.setdefault(key, threading.Lock())
    with building:  # one thread builds (reads a grid, queries rows); the others wait for it
        try:
            hit = _cache.get(key)
            if hit is None:
                hit = build()
                _cache.put(key, hit)
        finally:
            with _building_lock:
                _building.pop(key, None)
    return hit
