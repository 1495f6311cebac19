"""What the load generator asks for: which keys, how often reads versus writes, what values.

Everything here is pure and deterministic from `WorkloadConfig.seed`, so two targets measured
in one run see exactly the same sequence of operations, and tests can pin the distributions.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from array import array
from dataclasses import dataclass
from typing import Literal

Distribution = Literal["uniform", "zipfian"]
DISTRIBUTIONS: tuple[Distribution, ...] = ("uniform", "zipfian")

KEY_FORMAT = "key:%012d"
"""Keys are fixed-width so every encoded command for one operation type has the same length."""

MAX_KEY_COUNT = 10**12
"""Above this `KEY_FORMAT` would stop being fixed-width."""


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """The shape of the traffic, independent of where it is sent."""

    key_count: int = 100_000
    read_ratio: float = 0.5
    value_size_bytes: int = 100
    distribution: Distribution = "uniform"
    zipf_exponent: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.key_count <= MAX_KEY_COUNT:
            raise ValueError(f"key_count must be in 1..{MAX_KEY_COUNT}, got {self.key_count}")
        if not 0.0 <= self.read_ratio <= 1.0:
            raise ValueError(f"read_ratio must be in 0..1, got {self.read_ratio}")
        if self.value_size_bytes < 0:
            raise ValueError(f"value_size_bytes must be >= 0, got {self.value_size_bytes}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}")
        if self.zipf_exponent <= 0.0:
            raise ValueError(f"zipf_exponent must be > 0, got {self.zipf_exponent}")


def key_name(index: int) -> str:
    """The key stored for key index `index` (0-based)."""
    return KEY_FORMAT % index


def make_value(size_bytes: int, seed: int = 0) -> bytes:
    """A printable value of exactly `size_bytes`, built once and reused for every write."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    generator = random.Random(seed)
    return bytes(generator.choice(alphabet) for _ in range(size_bytes))


@functools.lru_cache(maxsize=4)
def _zipf_cumulative_weights(key_count: int, exponent: float) -> array[float]:
    """Cumulative weights of ranks 1..key_count under Zipf; cached since every target reuses it.

    A packed float array keeps this at 8 bytes per key even for millions of keys.
    """
    weights = ((rank + 1) ** -exponent for rank in range(key_count))
    return array("d", itertools.accumulate(weights))


class KeyChooser:
    """Picks key indexes in 0..key_count-1.

    Uniform draws from `random.Random(seed)`. Zipfian precomputes cumulative weights once and
    maps each uniform draw through a binary search (O(log n) per key, no rejection loop). Rank 0
    (`key:000000000000`) is the hottest key, rank 1 the next, and so on: hot keys are not
    scrambled, so with range partitioning they share a partition (hash partitioning spreads them).
    """

    def __init__(
        self,
        key_count: int,
        distribution: Distribution = "uniform",
        zipf_exponent: float = 0.99,
        seed: int = 0,
    ) -> None:
        self._key_count = key_count
        self._random = random.Random(seed)
        self._cumulative: array[float] | None = None
        if distribution == "zipfian":
            self._cumulative = _zipf_cumulative_weights(key_count, zipf_exponent)

    def next_index(self) -> int:
        """The next key index of the deterministic sequence."""
        cumulative = self._cumulative
        if cumulative is None:
            return self._random.randrange(self._key_count)
        index = bisect.bisect_right(cumulative, self._random.random() * cumulative[-1])
        # random() < 1.0, but rounding in the product can land exactly on the total.
        return index if index < self._key_count else self._key_count - 1


class OperationStream:
    """The deterministic sequence of (is_read, key_index) operations of one workload.

    Separate generators for the read/write choice and the key choice keep the key sequence the
    same when only the read ratio changes.
    """

    def __init__(self, config: WorkloadConfig) -> None:
        self._read_ratio = config.read_ratio
        self._operation_random = random.Random(config.seed * 2 + 1)
        self._keys = KeyChooser(
            config.key_count, config.distribution, config.zipf_exponent, config.seed
        )

    def next_operation(self) -> tuple[bool, int]:
        """(True for a read / False for a write, key index)."""
        is_read = self._operation_random.random() < self._read_ratio
        return is_read, self._keys.next_index()
