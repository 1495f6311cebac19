"""Error codes a request can end with, and whether the operation definitely did not happen.

Clients and checkers need to know if a failure is definite ("not applied") or
indefinite ("may have been applied"): a timeout is never definite.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    INVALID_ARGUMENT = "invalid-argument"
    NOT_INTEGER = "not-integer"
    OVERFLOW = "overflow"
    TOO_LARGE = "too-large"
    UNKNOWN_KEYSPACE = "unknown-keyspace"
    KEYSPACE_EXISTS = "keyspace-exists"
    MOVED = "moved"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    CORRUPT = "corrupt"
    INTERNAL = "internal"

    @property
    def definite(self) -> bool:
        """True when the operation certainly was not applied."""
        return self not in _INDEFINITE


_INDEFINITE = frozenset({ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL})
