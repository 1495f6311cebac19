"""Keyspace configuration: a name plus how its keys are partitioned and replicated."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quorumdb.core.partitioning import PartitioningError, PartitioningStrategy, parse_partitioning

DEFAULT_KEYSPACE = "default"
DEFAULT_PARTITIONING = "fixed:64"
REPLICATION_KINDS = ("none", "single-leader")
SYNC_MODES = ("all", "majority", "semi", "async")
DEFAULT_SYNC = "majority"
REPLICAS_MAX = 7
LOG_FORMATS = ("row", "statement")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


class KeyspaceConfigError(ValueError):
    """A keyspace definition that cannot be accepted."""


@dataclass(frozen=True, slots=True)
class KeyspaceConfig:
    """Settings chosen at creation. `partitioning` is a strategy spec such as `fixed:256`,
    `ring:vnodes=128` or `range`; `canonical()` spells it the one way it is stored.
    `replication` "single-leader" keeps `replication_factor` copies of each partition,
    acknowledging writes as `sync` says (all, majority, semi or async followers)."""

    name: str
    partitioning: str = DEFAULT_PARTITIONING
    replication_factor: int = 1
    replication: str = "none"
    sync: str = DEFAULT_SYNC
    # Replicated keyspaces: ship resulting rows, or the statements themselves; with
    # `deterministic` the leader turns server time and random ids into literals first.
    log_format: str = "row"
    deterministic: bool = True

    @property
    def replicated(self) -> bool:
        return self.replication != "none"

    def strategy(self) -> PartitioningStrategy:
        try:
            return parse_partitioning(self.partitioning)
        except PartitioningError as error:
            raise KeyspaceConfigError(str(error)) from None

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise KeyspaceConfigError(
                f"invalid keyspace name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'"
            )
        if not isinstance(self.partitioning, str):
            raise KeyspaceConfigError("partitioning must be a strategy spec such as 'fixed:64'")
        self.strategy()
        if self.replication not in REPLICATION_KINDS:
            kinds = ", ".join(REPLICATION_KINDS)
            raise KeyspaceConfigError(
                f"replication must be one of {kinds}, not {self.replication!r}"
            )
        if self.sync not in SYNC_MODES:
            modes = ", ".join(SYNC_MODES)
            raise KeyspaceConfigError(f"sync must be one of {modes}, not {self.sync!r}")
        if not self.replicated and self.replication_factor != 1:
            raise KeyspaceConfigError(
                "replicas need replication 'single-leader' (replication 'none' keeps one copy)"
            )
        if self.log_format not in LOG_FORMATS:
            formats = ", ".join(LOG_FORMATS)
            raise KeyspaceConfigError(f"log format must be one of {formats}")
        if not self.replicated and (self.log_format != "row" or not self.deterministic):
            raise KeyspaceConfigError("a log format needs replication 'single-leader'")
        if not isinstance(self.deterministic, bool):
            raise KeyspaceConfigError("deterministic must be true or false")
        if not 1 <= self.replication_factor <= REPLICAS_MAX:
            raise KeyspaceConfigError(f"replicas must be between 1 and {REPLICAS_MAX}")

    def canonical(self) -> KeyspaceConfig:
        """The same configuration with the spec spelled canonically (`fixed` -> `fixed:64`),
        so two spellings of one keyspace compare equal."""
        self.validate()
        sync = self.sync if self.replicated else DEFAULT_SYNC
        return KeyspaceConfig(
            self.name,
            self.strategy().to_text(),
            self.replication_factor,
            self.replication,
            sync,
            self.log_format,
            self.deterministic,
        )

    def to_dict(self) -> dict[str, object]:
        document: dict[str, object] = {
            "name": self.name,
            "partitioning": self.partitioning,
            "replication_factor": self.replication_factor,
        }
        if self.replicated:
            document["replication"] = self.replication
            document["sync"] = self.sync
            document["log_format"] = self.log_format
            document["deterministic"] = self.deterministic
        return document

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> KeyspaceConfig:
        partitioning = str(data.get("partitioning", DEFAULT_PARTITIONING))
        if "partition_count" in data and ":" not in partitioning:
            # Catalogs from before strategy specs: {"partitioning": "fixed", "partition_count": 8}
            partitioning = f"{partitioning}:{_as_int(data['partition_count'])}"
        config = cls(
            name=str(data["name"]),
            partitioning=partitioning,
            replication_factor=_as_int(data.get("replication_factor", 1)),
            replication=str(data.get("replication", "none")),
            sync=str(data.get("sync", DEFAULT_SYNC)),
            log_format=str(data.get("log_format", "row")),
            deterministic=bool(data.get("deterministic", True)),
        )
        return config.canonical()


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KeyspaceConfigError(f"expected an integer, got {value!r}")
    return value
