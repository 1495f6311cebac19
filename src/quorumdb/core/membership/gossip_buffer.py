"""Recent updates waiting to be piggy-backed, least-sent and newest first.

SWIM spreads an update by attaching it to the next messages a member sends anyway,
each update about lambda * log(n) times, after which the epidemic has reached every
member with high probability. Only the latest update per key is kept: a newer one
replaces the older and starts again with zero sends.

Items sit in buckets by send count, each bucket in arrival order, so choosing the
items for one message costs O(items chosen + buckets), not a sort of the buffer.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


class GossipBuffer(Generic[Key, Item]):
    def __init__(self, size_max: int) -> None:
        assert size_max >= 1
        self.size_max = size_max
        self._buckets: dict[int, dict[Key, Item]] = {}
        self._send_count: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._send_count)

    def __contains__(self, key: Key) -> bool:
        return key in self._send_count

    def send_count(self, key: Key) -> int | None:
        return self._send_count.get(key)

    def add(self, key: Key, item: Item) -> None:
        """Queue `item`, replacing any older item under `key`, with zero sends so far."""
        count = self._send_count.get(key)
        if count is not None:
            self._remove(key, count)
        self._buckets.setdefault(0, {})[key] = item
        self._send_count[key] = 0
        if len(self._send_count) > self.size_max:
            self._drop_most_sent()

    def take(self, count_max: int, send_limit: int) -> list[Item]:
        """Items for one message: fewest sends first, newest first among equals.

        Each chosen item counts one send; an item sent `send_limit` times is retired.
        """
        assert count_max >= 0
        assert send_limit >= 1
        chosen: list[tuple[Key, int]] = []
        for count in sorted(self._buckets):
            for key in reversed(self._buckets[count]):
                if len(chosen) == count_max:
                    break
                chosen.append((key, count))
            if len(chosen) == count_max:
                break
        items: list[Item] = []
        for key, count in chosen:
            item = self._remove(key, count)
            items.append(item)
            if count + 1 < send_limit:
                self._buckets.setdefault(count + 1, {})[key] = item
                self._send_count[key] = count + 1
        return items

    def _remove(self, key: Key, count: int) -> Item:
        bucket = self._buckets[count]
        item = bucket.pop(key)
        if not bucket:
            del self._buckets[count]
        del self._send_count[key]
        return item

    def _drop_most_sent(self) -> None:
        count = max(self._buckets)
        oldest = next(iter(self._buckets[count]))
        self._remove(oldest, count)
