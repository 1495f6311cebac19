"""Who takes part in the Raft group: voters decide, learners only receive the log.

A configuration is carried whole in every configuration entry and snapshot, never as
a delta, so a node that sees only one of them (a new learner, a node restoring a
snapshot) still knows the full membership.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple

_COUNT = struct.Struct(">H")


class Configuration(NamedTuple):
    voters: frozenset[str]
    learners: frozenset[str] = frozenset()

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def is_voter(self, node_id: str) -> bool:
        return node_id in self.voters

    def quorum_size(self) -> int:
        """Votes (or acknowledgements) that make a majority of the voters."""
        return len(self.voters) // 2 + 1

    def has_quorum(self, node_ids: set[str] | frozenset[str]) -> bool:
        return len(self.voters & node_ids) >= self.quorum_size()

    def describe(self) -> str:
        voters = ",".join(sorted(self.voters))
        learners = ",".join(sorted(self.learners))
        return f"voters={voters} learners={learners or '-'}"


EMPTY_CONFIGURATION = Configuration(frozenset(), frozenset())


class MembershipChangeKind(Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE_LEARNER = "promote-learner"
    REMOVE = "remove"


class MembershipChange(NamedTuple):
    """One server at a time (Raft dissertation §4.1): any two majorities still overlap."""

    kind: MembershipChangeKind
    node_id: str


class MembershipChangeError(ValueError):
    """A change that makes no sense for the configuration it would apply to."""


def changed_configuration(configuration: Configuration, change: MembershipChange) -> Configuration:
    """The configuration after `change`, or MembershipChangeError saying why not."""
    node_id = change.node_id
    voters, learners = configuration.voters, configuration.learners
    if change.kind is MembershipChangeKind.ADD_LEARNER:
        if node_id in configuration.members:
            raise MembershipChangeError(f"{node_id} is already a member")
        return Configuration(voters, learners | {node_id})
    if change.kind is MembershipChangeKind.PROMOTE_LEARNER:
        if node_id not in learners:
            raise MembershipChangeError(f"{node_id} is not a learner")
        return Configuration(voters | {node_id}, learners - {node_id})
    if node_id not in configuration.members:
        raise MembershipChangeError(f"{node_id} is not a member")
    if voters == {node_id}:
        raise MembershipChangeError(f"{node_id} is the last voter")
    return Configuration(voters - {node_id}, learners - {node_id})


# --- bytes ----------------------------------------------------------------------------------


def _encode_names(names: frozenset[str]) -> bytes:
    parts = [_COUNT.pack(len(names))]
    for name in sorted(names):
        raw = name.encode()
        parts.append(_COUNT.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _decode_names(raw: bytes, offset: int) -> tuple[frozenset[str], int]:
    (count,) = _COUNT.unpack_from(raw, offset)
    offset += _COUNT.size
    names = []
    for _ in range(count):
        (length,) = _COUNT.unpack_from(raw, offset)
        offset += _COUNT.size
        names.append(raw[offset : offset + length].decode())
        offset += length
    return frozenset(names), offset


def encode_configuration(configuration: Configuration) -> bytes:
    return _encode_names(configuration.voters) + _encode_names(configuration.learners)


def decode_configuration(raw: bytes, offset: int = 0) -> tuple[Configuration, int]:
    """The configuration stored at `offset`, and the offset just past it."""
    voters, offset = _decode_names(raw, offset)
    learners, offset = _decode_names(raw, offset)
    return Configuration(voters, learners), offset
