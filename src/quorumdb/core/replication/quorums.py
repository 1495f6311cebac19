"""How many followers must answer before a partition's leader can be replaced safely.

Every acknowledged write is on the leader and on enough followers that any set of
answers this size holds one of them (see failover.py for the table). The same number
bounds a leader's lease: a successor needs that many promises, so the lease lasts until
that many followers' grants have run out.
"""

from __future__ import annotations


def answers_needed(mode: str, replica_count: int) -> int:
    if mode == "all" or mode == "async":
        return 1
    if mode == "majority":
        return replica_count - (replica_count // 2 + 1) + 1
    return replica_count - 1
