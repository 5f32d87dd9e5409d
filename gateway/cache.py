"""A memo for values derived from client text, bounded by entries *and* by bytes.

Caches keyed by what clients send (tool schemas, thinking signatures) must not let a client pin
memory with a few huge keys (issue 10 item 6): an entry larger than ``max_entry_bytes`` is
never stored, and the oldest entries go first once the count or the byte total would pass its
bound (a FIFO: dicts keep insertion order, and popping the head is O(1)).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    __slots__ = ("_data", "bytes", "max_bytes", "max_entries", "max_entry_bytes")

    def __init__(self, *, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        self._data: dict[K, tuple[V, int]] = {}
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        #: the sizes of the entries held now, as their callers reported them
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> tuple[V, int] | None:
        """``(value, size)`` or None; a tuple so that a cached None is still a hit."""
        return self._data.get(key)

    def put(self, key: K, value: V, size: int) -> None:
        """Remember ``value`` under ``key``; ``size`` is what both cost, in bytes."""
        if size > self.max_entry_bytes or key in self._data:
            return
        data = self._data
        while data and (len(data) >= self.max_entries or self.bytes + size > self.max_bytes):
            oldest = next(iter(data))
            self.bytes -= data.pop(oldest)[1]
        data[key] = (value, size)
        self.bytes += size

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0
