"""The randomness a member needs, as a protocol: the caller passes a seeded
`random.Random`, and the core never imports the global generator."""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import Any, Protocol


class RandomSource(Protocol):
    def randrange(self, start: int, /) -> int: ...

    def randint(self, a: int, b: int, /) -> int: ...

    def shuffle(self, x: MutableSequence[Any], /) -> None: ...
