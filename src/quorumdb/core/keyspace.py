"""Keyspace configuration: a name plus how its keys are partitioned and replicated."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_KEYSPACE = "default"
DEFAULT_PARTITION_COUNT = 64
PARTITION_COUNT_MAX = 4096
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class KeyspaceConfigError(ValueError):
    """A keyspace definition that cannot be accepted."""


@dataclass(frozen=True, slots=True)
class KeyspaceConfig:
    """Settings chosen at creation; later issues add modes beyond `fixed` and factor 1."""

    name: str
    partitioning: str = "fixed"
    partition_count: int = DEFAULT_PARTITION_COUNT
    replication_factor: int = 1

    def validate(self) -> None:
        if not _NAME_PATTERN.match(self.name):
            raise KeyspaceConfigError(
                f"invalid keyspace name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'"
            )
        if self.partitioning != "fixed":
            raise KeyspaceConfigError(
                f"unsupported partitioning {self.partitioning!r}: only 'fixed' is available"
            )
        if not 1 <= self.partition_count <= PARTITION_COUNT_MAX:
            raise KeyspaceConfigError(
                f"partition count must be between 1 and {PARTITION_COUNT_MAX},"
                f" got {self.partition_count}"
            )
        if self.replication_factor != 1:
            raise KeyspaceConfigError("only replication factor 1 is available")

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "partitioning": self.partitioning,
            "partition_count": self.partition_count,
            "replication_factor": self.replication_factor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> KeyspaceConfig:
        config = cls(
            name=str(data["name"]),
            partitioning=str(data.get("partitioning", "fixed")),
            partition_count=_as_int(data.get("partition_count", DEFAULT_PARTITION_COUNT)),
            replication_factor=_as_int(data.get("replication_factor", 1)),
        )
        config.validate()
        return config


def parse_partitioning(text: str) -> tuple[str, int]:
    """Parse a strategy spec such as `fixed` or `fixed:256` into (strategy, partition count)."""
    name, _, parameter = text.partition(":")
    if name != "fixed":
        raise KeyspaceConfigError(f"unsupported partitioning {name!r}: only 'fixed' is available")
    if not parameter:
        return name, DEFAULT_PARTITION_COUNT
    try:
        return name, int(parameter)
    except ValueError:
        message = f"partition count must be an integer, got {parameter!r}"
        raise KeyspaceConfigError(message) from None


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyspaceConfigError(f"expected an integer, got {value!r}")
    return value
