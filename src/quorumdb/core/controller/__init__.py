"""The metadata controller's consensus core: Raft over a pluggable state machine.

Public names are loaded on first use (PEP 562), not at import: `core.messages` imports
`raft_messages` from this package to widen its `Message` union, and `raft` imports
`core.effects`, which imports `core.messages` - importing `raft` here eagerly would
close that cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quorumdb.core.controller.raft import RaftNode, Role, leader_hint, not_leader
    from quorumdb.core.controller.raft_config import RaftConfig, RaftConfigError
    from quorumdb.core.controller.raft_configuration import (
        Configuration,
        MembershipChange,
        MembershipChangeKind,
    )
    from quorumdb.core.controller.raft_log import EntryKind, LogEntry, Snapshot
    from quorumdb.core.controller.raft_messages import RaftMessage
    from quorumdb.core.controller.raft_persistence import (
        EMPTY_STATE,
        PersistedState,
        load_persisted_state,
    )
    from quorumdb.core.controller.raft_state_machine import StateMachine

_EXPORTS = {
    "RaftNode": "raft",
    "Role": "raft",
    "leader_hint": "raft",
    "not_leader": "raft",
    "RaftConfig": "raft_config",
    "RaftConfigError": "raft_config",
    "Configuration": "raft_configuration",
    "MembershipChange": "raft_configuration",
    "MembershipChangeKind": "raft_configuration",
    "EntryKind": "raft_log",
    "LogEntry": "raft_log",
    "Snapshot": "raft_log",
    "RaftMessage": "raft_messages",
    "EMPTY_STATE": "raft_persistence",
    "PersistedState": "raft_persistence",
    "load_persisted_state": "raft_persistence",
    "StateMachine": "raft_state_machine",
}

__all__ = [
    "Configuration",
    "EMPTY_STATE",
    "EntryKind",
    "LogEntry",
    "MembershipChange",
    "MembershipChangeKind",
    "PersistedState",
    "RaftConfig",
    "RaftConfigError",
    "RaftMessage",
    "RaftNode",
    "Role",
    "Snapshot",
    "StateMachine",
    "leader_hint",
    "load_persisted_state",
    "not_leader",
]
assert set(__all__) == set(_EXPORTS)


def __getattr__(name: str) -> object:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, name)
