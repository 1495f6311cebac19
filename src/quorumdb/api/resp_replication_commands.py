"""RESP commands for replicated keyspaces: what replication an answer got, and asking
for more or less of it per request (plain GET/SET keep the keyspace's defaults).

    QUORUMDB.GET key [CONSISTENCY linearizable|eventual|session|bounded]
                     [AFTER epoch sequence] [MAXLAG ms]
        -> [value, epoch, sequence]          (AFTER implies CONSISTENCY session,
                                               MAXLAG implies bounded)
    QUORUMDB.SET key value [SYNC all|majority|semi|async]
        -> [OK, acks, epoch, sequence]
    QUORUMDB.DEL key [SYNC all|majority|semi|async]
        -> [deleted (0/1), acks, epoch, sequence]

The position (epoch, sequence) is where the answer sits in the partition's replication
log: a client keeps the newest one per partition as its session token and passes it as
AFTER, for read-your-writes and monotonic reads at any replica. Acks, epoch and sequence
are null for unreplicated keyspaces.
"""

from __future__ import annotations

from quorumdb.api.redis_errors import error_text
from quorumdb.api.resp_commands import (
    NOT_INTEGER,
    SYNTAX_ERROR,
    CommandContext,
    command,
    parse_integer,
)
from quorumdb.api.resp_protocol import ArrayItem, encode_array, encode_error
from quorumdb.core.messages import READ_CONSISTENCIES, Delete, Get, Outcome, Put
from quorumdb.core.replication.statement import GENERATORS

_SYNC_MODES = (b"all", b"majority", b"semi", b"async")


def _position(outcome: Outcome) -> list[ArrayItem]:
    if outcome.position is None:
        return [None, None]
    return [outcome.position[0], outcome.position[1]]


def _render_read(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return encode_error(error_text(outcome))
    return encode_array([outcome.value, *_position(outcome)])  # type: ignore[list-item]


def _render_write(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return encode_error(error_text(outcome))
    result: ArrayItem = b"OK" if outcome.value is True else int(bool(outcome.value))
    return encode_array([result, outcome.acks, *_position(outcome)])


@command("quorumdb.get", -2, ["readonly"], (1, 1, 1))
def replicated_get(context: CommandContext, arguments: list[bytes]) -> None:
    consistency = "linearizable"
    min_position: tuple[int, int] | None = None
    max_lag_ms: int | None = None
    index = 2
    while index < len(arguments):
        option = arguments[index].upper()
        if option == b"CONSISTENCY" and index + 1 < len(arguments):
            consistency = arguments[index + 1].decode("utf-8", "replace").lower()
            if consistency not in READ_CONSISTENCIES:
                choices = ", ".join(READ_CONSISTENCIES)
                context.reply(encode_error(f"ERR CONSISTENCY must be one of {choices}"))
                return
            index += 2
        elif option == b"AFTER" and index + 2 < len(arguments):
            epoch, sequence = (
                parse_integer(arguments[index + 1]),
                parse_integer(arguments[index + 2]),
            )
            if epoch is None or sequence is None or epoch < 0 or sequence < 0:
                context.reply(NOT_INTEGER)
                return
            min_position = (epoch, sequence)
            index += 3
        elif option == b"MAXLAG" and index + 1 < len(arguments):
            max_lag_ms = parse_integer(arguments[index + 1])
            if max_lag_ms is None or max_lag_ms < 0:
                context.reply(NOT_INTEGER)
                return
            index += 2
        else:
            context.reply(SYNTAX_ERROR)
            return
    if consistency == "linearizable" and min_position is not None:
        consistency = "session"
    elif consistency == "linearizable" and max_lag_ms is not None:
        consistency = "bounded"
    read = Get(context.keyspace, arguments[1], consistency, min_position, max_lag_ms)
    context.submit(read, _render_read, "get")


def _sync_option(context: CommandContext, options: list[bytes]) -> tuple[bool, str | None]:
    """(valid, mode) from `[SYNC mode]`; replies the error itself when not valid."""
    if not options:
        return True, None
    if len(options) == 2 and options[0].upper() == b"SYNC" and options[1].lower() in _SYNC_MODES:
        return True, options[1].lower().decode()
    modes = "|".join(mode.decode() for mode in _SYNC_MODES)
    context.reply(encode_error(f"ERR syntax error: expected SYNC {modes}"))
    return False, None


@command("quorumdb.set", -3, ["write", "denyoom"], (1, 1, 1))
def replicated_set(context: CommandContext, arguments: list[bytes]) -> None:
    valid, mode = _sync_option(context, arguments[3:])
    if valid:
        operation = Put(context.keyspace, arguments[1], arguments[2], sync=mode)
        context.submit(operation, _render_write, "set")


@command("quorumdb.setgenerated", -3, ["write"], (1, 1, 1))
def generated_set(context: CommandContext, arguments: list[bytes]) -> None:
    """QUORUMDB.SETGENERATED key server-time|random-id [SYNC mode]: the node running the
    put makes the value (the non-deterministic statements of statement-based logs)."""
    generator = arguments[2].lower().decode("utf-8", "replace")
    if generator not in GENERATORS:
        context.reply(encode_error(f"ERR expected {' or '.join(GENERATORS)}"))
        return
    valid, mode = _sync_option(context, arguments[3:])
    if valid:
        put = Put(context.keyspace, arguments[1], b"", sync=mode, generate=generator)
        context.submit(put, _render_write, "set")


@command("quorumdb.del", -2, ["write"], (1, 1, 1))
def replicated_delete(context: CommandContext, arguments: list[bytes]) -> None:
    valid, mode = _sync_option(context, arguments[2:])
    if valid:
        context.submit(Delete(context.keyspace, arguments[1], sync=mode), _render_write, "del")
