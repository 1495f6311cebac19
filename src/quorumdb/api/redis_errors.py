"""How core outcomes read as Redis error replies.

The first word is the error class, as in Redis (`ERR`, `WRONGTYPE`, ...); quorumdb
adds `TIMEOUT` and `UNAVAILABLE` for outcomes that may or may not have happened,
and `REDIRECT` for stale routing, so clients can tell them apart. Not `MOVED`:
redis-py parses a MOVED reply as Redis Cluster's `MOVED <slot> <host:port>` and
fails on any other text, which would break plain Redis clients.
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
    ErrorCode.MOVED: "REDIRECT",
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
    """Redis's exact text: each argument quoted and followed by a space, about 128 bytes
    of arguments at most, e.g. "ERR unknown command 'foo', with args beginning with: 'x' "."""
    shown = ""
    for argument in arguments:
        if len(shown) >= 128:
            break
        shown += f"'{argument[: 128 - len(shown)].decode('utf-8', 'replace')}' "
    return (
        f"ERR unknown command '{name[:128].decode('utf-8', 'replace')}', "
        f"with args beginning with: {shown}"
    )
