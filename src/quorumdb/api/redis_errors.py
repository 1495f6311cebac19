"""How core outcomes read as Redis error replies.

The first word is the error class, as in Redis (`ERR`, `WRONGTYPE`, ...); quorumdb
adds `TIMEOUT` and `UNAVAILABLE` for outcomes that may or may not have happened,
and `MOVED` for stale routing, so clients can tell them apart.
"""

from __future__ import annotations

from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import Outcome

_PREFIX = {
    ErrorCode.NOT_INTEGER: "ERR value is not an integer or out of range",
    ErrorCode.OVERFLOW: "ERR increment or decrement would overflow",
}
_CLASS = {
    ErrorCode.TIMEOUT: "TIMEOUT",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.MOVED: "MOVED",
    ErrorCode.CORRUPT: "CORRUPT",
}


def error_text(outcome: Outcome) -> str:
    assert outcome.error is not None
    fixed = _PREFIX.get(outcome.error)
    if fixed is not None:
        return fixed
    return f"{_CLASS.get(outcome.error, 'ERR')} {outcome.message}"


def wrong_arity(command: str) -> str:
    return f"ERR wrong number of arguments for '{command}' command"


def unknown_command(name: bytes, arguments: list[bytes]) -> str:
    shown = " ".join(f"'{argument[:64].decode('utf-8', 'replace')}'" for argument in arguments[:4])
    return (
        f"ERR unknown command '{name[:64].decode('utf-8', 'replace')}', "
        f"with args beginning with: {shown}"
    )
