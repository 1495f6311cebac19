"""Redis commands mapped onto quorumdb operations.

Through any node the cluster looks like one database: commands over several keys
(MGET, MSET, DEL, EXISTS) fan out to each key's owner, SCAN's cursor walks every
partition, DBSIZE counts them all. MSET is atomic per key, not across keys.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quorumdb import __version__
from quorumdb.api.redis_errors import error_text, wrong_arity
from quorumdb.api.resp_protocol import (
    NULL_BULK,
    OK,
    PONG,
    ArrayItem,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
)
from quorumdb.core.messages import (
    Append,
    CountPartition,
    Delete,
    Get,
    Increment,
    Operation,
    Outcome,
    Put,
    PutCondition,
    ScanPage,
    ScanPartition,
)
from quorumdb.core.node import NOT_LOCAL
from quorumdb.core.range_scan import RangePage, RangeScanError, encode_token, page_start
from quorumdb.runtime.range_scan_driver import range_scan_page

if TYPE_CHECKING:
    from quorumdb.api.resp_server import RespServer
    from quorumdb.runtime.node_runtime import NodeRuntime

LOG = logging.getLogger(__name__)
SCAN_PARTITION_SLOTS = 8192  # cursor = token * 8192 + partition
SCAN_CURSOR_TABLE_MAX = 100_000


class CommandContext:
    """What a command handler may use of its connection."""

    server: RespServer
    runtime: NodeRuntime
    keyspace: str
    # Single-key commands for keys owned elsewhere answer REDIRECT instead of being forwarded.
    redirects: bool
    name: bytes | None
    client_id: int
    protocol: int
    created_at_ms: int
    # When the chunk holding the current command arrived (wall clock, for expiry checks).
    now_ms: int
    # The runtime's `read_local`, resolved once per connection.
    read_local: Callable[[int, str, bytes], object]

    def reply(self, data: bytes) -> None: ...

    def submit(
        self, operation: Operation, render: Callable[[Outcome], bytes], name: str
    ) -> None: ...

    def reply_when_durable(self, data: bytes, operation_index: int, count: int = 1) -> None: ...

    def deferred(self) -> Callable[[bytes], None]: ...

    def close_after_reply(self) -> None: ...


Handler = Callable[[CommandContext, list[bytes]], None]
COMMANDS: dict[bytes, Handler] = {}
# name -> (arity in Redis's convention: negative means "at least"), flags, first key, last key, step
COMMAND_TABLE: dict[str, tuple[int, list[str], int, int, int]] = {}
# For COMMAND DOCS (Redis's own summaries; commands missing here get a generic one).
COMMAND_SUMMARIES = {
    "ping": "Returns the server's liveliness response.",
    "echo": "Returns the given string.",
    "quit": "Closes the connection.",
    "select": "Changes the selected database (only 0 exists).",
    "hello": "Handshakes with the server.",
    "client": "Connection management: SETNAME, GETNAME, ID, INFO, LIST.",
    "config": "Returns the effective values of configuration parameters.",
    "command": "Returns detailed information about commands.",
    "get": "Returns the string value of a key.",
    "set": "Sets the string value of a key, ignoring its type.",
    "strlen": "Returns the length of a string value.",
    "append": "Appends a string to the value of a key. Creates the key if it doesn't exist.",
    "incr": "Increments the integer value of a key by one.",
    "decr": "Decrements the integer value of a key by one.",
    "incrby": "Increments the integer value of a key by a number.",
    "decrby": "Decrements a number from the integer value of a key.",
    "mget": "Atomically returns the string values of one or more keys.",
    "mset": "Sets the string values of one or more keys (atomic per key, not across keys).",
    "del": "Deletes one or more keys.",
    "unlink": "Deletes one or more keys.",
    "exists": "Determines whether one or more keys exist.",
    "dbsize": "Returns the number of keys in the keyspace, over the whole cluster.",
    "scan": "Iterates over the key names in the keyspace, over the whole cluster.",
    "quorumdb.range": "Returns the keys of [start, end) in key order, a page at a time.",
    "info": "Returns information and statistics about the server.",
}

# Operations answered on the fast path are counted per connection by index, cheaply.
FAST_OPERATIONS = ("get", "set")
FAST_GET = 0
FAST_SET = 1

SYNTAX_ERROR = encode_error("ERR syntax error")
NOT_INTEGER = encode_error("ERR value is not an integer or out of range")


def command(
    name: str,
    arity: int,
    flags: list[str],
    keys: tuple[int, int, int] = (0, 0, 0),
    checks_arity: bool = False,
) -> Callable[[Handler], Handler]:
    """Register a handler; `checks_arity` handlers (the hot ones) check arity themselves."""

    def register(handler: Handler) -> Handler:
        def checked(context: CommandContext, arguments: list[bytes]) -> None:
            count = len(arguments)
            if (arity >= 0 and count != arity) or (arity < 0 and count < -arity):
                context.reply(encode_error(wrong_arity(name)))
                return
            handler(context, arguments)

        COMMANDS[name.encode()] = handler if checks_arity else checked
        COMMAND_TABLE[name] = (arity, flags, *keys)
        return handler

    return register


# --- rendering outcomes ------------------------------------------------------------------


def _error(outcome: Outcome) -> bytes:
    return encode_error(error_text(outcome))


def render_bulk(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return _error(outcome)
    return encode_bulk(outcome.value)  # type: ignore[arg-type]


def render_integer(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return _error(outcome)
    return encode_integer(int(outcome.value))  # type: ignore[call-overload]


def render_set(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return _error(outcome)
    return OK if outcome.value else NULL_BULK


def render_length(outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return _error(outcome)
    value = outcome.value
    return encode_integer(0 if value is None else len(value))  # type: ignore[arg-type]


def parse_integer(raw: bytes) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


class Gather:
    """Collects the outcomes of several operations issued for one command."""

    def __init__(
        self,
        context: CommandContext,
        count: int,
        finish: Callable[[list[Outcome]], bytes],
        name: str | None = None,
    ) -> None:
        fill = context.deferred()
        if name is None:
            self.fill = fill
        else:  # counted in the request metrics like single-key commands
            self.fill = _recording(context, name, fill)
        self.outcomes: list[Outcome | None] = [None] * count
        self.remaining = count
        self.finish = finish
        if count == 0:
            self.fill(finish([]))

    def run(self, context: CommandContext, index: int, operation: Operation) -> None:
        def done(outcome: Outcome) -> None:
            self.outcomes[index] = outcome
            self.remaining -= 1
            if self.remaining == 0:
                self.fill(self.finish(self.outcomes))  # type: ignore[arg-type]

        context.runtime.submit(operation, done)


def _recording(
    context: CommandContext, name: str, fill: Callable[[bytes], None]
) -> Callable[[bytes], None]:
    """Wrap a deferred reply so that filling it records the command's latency and outcome."""
    metrics = context.runtime.metrics
    started_ns = time.perf_counter_ns()

    def record_and_fill(data: bytes) -> None:
        metrics.record(name, time.perf_counter_ns() - started_ns, data.startswith(b"-"))
        fill(data)

    return record_and_fill


def _first_error(outcomes: list[Outcome]) -> bytes | None:
    for outcome in outcomes:
        if outcome.error is not None:
            return _error(outcome)
    return None


# --- connection and server commands ------------------------------------------------------


@command("ping", -1, ["fast", "stale"])
def ping(context: CommandContext, arguments: list[bytes]) -> None:
    if len(arguments) > 2:
        context.reply(encode_error(wrong_arity("ping")))
    elif len(arguments) == 2:
        context.reply(encode_bulk(arguments[1]))
    else:
        context.reply(PONG)


@command("echo", 2, ["fast"])
def echo(context: CommandContext, arguments: list[bytes]) -> None:
    context.reply(encode_bulk(arguments[1]))


@command("quit", -1, ["fast"])
def quit_(context: CommandContext, arguments: list[bytes]) -> None:
    context.reply(OK)
    context.close_after_reply()


@command("select", 2, ["fast"])
def select(context: CommandContext, arguments: list[bytes]) -> None:
    if arguments[1] == b"0":
        context.reply(OK)
    else:
        context.reply(encode_error("ERR DB index is out of range"))


@command("hello", -1, ["fast"])
def hello(context: CommandContext, arguments: list[bytes]) -> None:
    """RESP2 and RESP3 clients both work: quorumdb's replies use only types common to both,
    except HELLO's own reply, which is a map under RESP3 (redis-py 8 asks for RESP3)."""
    protocol = context.protocol
    if len(arguments) > 1:
        requested = parse_integer(arguments[1])
        if requested not in (2, 3):
            context.reply(encode_error("NOPROTO unsupported protocol version"))
            return
        protocol = requested
    index = 2
    while index < len(arguments):
        option = arguments[index].upper()
        if option == b"SETNAME" and index + 1 < len(arguments):
            context.name = arguments[index + 1] or None
            index += 2
        elif option == b"AUTH" and index + 2 < len(arguments):
            index += 3  # no authentication yet: accept, as Redis without requirepass does
        else:
            context.reply(SYNTAX_ERROR)
            return
    context.protocol = protocol
    fields: list[Any] = [
        b"server",
        b"redis",
        b"version",
        b"7.2.0",
        b"proto",
        protocol,
        b"id",
        context.client_id,
        b"mode",
        b"cluster",
        b"role",
        b"master",
        b"modules",
        [],
    ]
    if protocol == 3:
        context.reply(encode_map(fields))
    else:
        context.reply(encode_array(fields))


def encode_map(flat: list[Any]) -> bytes:
    """RESP3 map from alternating keys and values."""
    body = encode_array(flat)
    return b"%" + str(len(flat) // 2).encode() + body[body.index(b"\r\n") :]


@command("client", -2, ["slow"])
def client(context: CommandContext, arguments: list[bytes]) -> None:
    sub = arguments[1].lower()
    if sub == b"setname" and len(arguments) == 3:
        if b" " in arguments[2] or b"\n" in arguments[2]:
            context.reply(encode_error("ERR Client names cannot contain spaces or newlines"))
            return
        context.name = arguments[2] or None
        context.reply(OK)
    elif sub == b"getname" and len(arguments) == 2:
        context.reply(encode_bulk(context.name))
    elif sub == b"id" and len(arguments) == 2:
        context.reply(encode_integer(context.client_id))
    elif sub == b"setinfo" and len(arguments) == 4:
        context.reply(OK)
    elif sub == b"info" and len(arguments) == 2:
        context.reply(encode_bulk(_client_line(context).encode()))
    elif sub == b"list" and len(arguments) == 2:
        lines = "".join(_client_line(other) + "\n" for other in context.server.connections)
        context.reply(encode_bulk(lines.encode()))
    else:
        sub_name = arguments[1].decode("utf-8", "replace")
        context.reply(
            encode_error(f"ERR unknown subcommand or wrong arity for 'client|{sub_name}'")
        )


def _client_line(context: CommandContext) -> str:
    name = (context.name or b"").decode("utf-8", "replace")
    age_seconds = (int(time.time() * 1000) - context.created_at_ms) // 1000
    return f"id={context.client_id} name={name} age={age_seconds} db=0 keyspace={context.keyspace}"


@command("config", -2, ["slow"])
def config(context: CommandContext, arguments: list[bytes]) -> None:
    """Enough for tools that probe settings (redis-benchmark asks for save/appendonly)."""
    if arguments[1].lower() != b"get" or len(arguments) != 3:
        context.reply(encode_error("ERR only CONFIG GET <parameter> is supported"))
        return
    fsync = context.runtime.settings.fsync.value
    known = {
        b"save": b"",
        b"appendonly": b"yes" if fsync != "no" else b"no",
        b"appendfsync": fsync.encode(),
        b"databases": b"1",
    }
    pattern = arguments[1 + 1].decode("utf-8", "replace")
    matched: list[Any] = []
    for key, value in known.items():
        if fnmatch.fnmatchcase(key.decode(), pattern):
            matched.extend([key, value])
    context.reply(encode_map(matched) if context.protocol == 3 else encode_array(matched))


@command("command", -1, ["slow"])
def command_info(context: CommandContext, arguments: list[bytes]) -> None:
    sub = arguments[1].lower() if len(arguments) > 1 else b""
    if sub == b"count":
        context.reply(encode_integer(len(COMMAND_TABLE)))
        return
    if sub == b"docs":
        _command_docs(context, arguments[2:])
        return
    names = sorted(COMMAND_TABLE)
    if sub == b"info":
        names = [argument.decode("utf-8", "replace").lower() for argument in arguments[2:]]
    elif sub:
        sub_name = arguments[1].decode("utf-8", "replace")
        context.reply(encode_error(f"ERR unknown subcommand '{sub_name}'"))
        return
    rows: list[Any] = []
    for name in names:
        entry = COMMAND_TABLE.get(name)
        if entry is None:
            rows.append(None)
            continue
        arity, flags, first, last, step = entry
        # Redis 7's shape: name, arity, flags, first/last key, step, ACL categories, tips,
        # key specs, subcommands (redis-py's RESP3 parser needs all ten).
        flag_list = [flag.encode() for flag in flags]
        rows.append(
            [name.encode(), arity, flag_list, first, last, step, _categories(entry), [], [], []]
        )
    context.reply(encode_array(rows))


def _categories(entry: tuple[int, list[str], int, int, int]) -> list[Any]:
    flags = entry[1]
    categories = [b"@keyspace" if entry[2] else b"@connection"]
    if "write" in flags:
        categories.append(b"@write")
    elif "readonly" in flags:
        categories.append(b"@read")
    categories.append(b"@fast" if "fast" in flags else b"@slow")
    return categories


def _command_docs(context: CommandContext, wanted: list[bytes]) -> None:
    """COMMAND DOCS: a summary and group per command (a map under RESP3, flat under RESP2)."""
    names = [w.decode("utf-8", "replace").lower() for w in wanted] or sorted(COMMAND_TABLE)
    flat: list[Any] = []
    for name in names:
        entry = COMMAND_TABLE.get(name)
        if entry is None:
            continue
        doc = [
            b"summary",
            COMMAND_SUMMARIES.get(name, f"The {name.upper()} command").encode(),
            b"since",
            b"1.0.0",
            b"group",
            b"generic" if entry[2] == 0 else b"string",
        ]
        flat.extend([name.encode(), encode_map(doc) if context.protocol == 3 else doc])
    if context.protocol == 3:
        context.reply(_encode_map_raw(flat))
    else:
        context.reply(encode_array(flat))


def _encode_map_raw(flat: list[Any]) -> bytes:
    """A RESP3 map whose values may be pre-encoded replies (bytes that start a RESP type)."""
    parts = [b"%" + str(len(flat) // 2).encode() + b"\r\n"]
    for key, value in zip(flat[::2], flat[1::2], strict=True):
        parts.append(encode_bulk(key))
        parts.append(value)
    return b"".join(parts)


@command("quorumdb.map", 1, ["fast"])
def partition_map(context: CommandContext, arguments: list[bytes]) -> None:
    """The partition map as JSON, for smart clients that send each key to its owner."""
    document = context.runtime.node.partition_map.to_dict()
    context.reply(encode_bulk(json.dumps(document).encode()))


@command("quorumdb.keyspace", -1, ["fast"])
def use_keyspace(context: CommandContext, arguments: list[bytes]) -> None:
    """Show or switch the keyspace this connection's commands address."""
    if len(arguments) == 1:
        context.reply(encode_bulk(context.keyspace.encode()))
        return
    name = arguments[1].decode("utf-8", "replace")
    if name not in context.runtime.node.partition_map.keyspaces:
        context.reply(encode_error(f"ERR unknown keyspace '{name}'"))
        return
    context.keyspace = name
    context.reply(OK)


@command("quorumdb.redirects", -1, ["fast"])
def redirects(context: CommandContext, arguments: list[bytes]) -> None:
    """Show or set whether this connection gets REDIRECT for keys owned by another node.

    Off by default, so plain Redis clients are served by forwarding; smart clients that
    route by the map turn it on and follow REDIRECT to the owner, refreshing their map."""
    if len(arguments) == 1:
        context.reply(encode_bulk(b"on" if context.redirects else b"off"))
        return
    choice = arguments[1].lower() if len(arguments) == 2 else b""
    if choice not in (b"on", b"off"):
        context.reply(encode_error("ERR usage: QUORUMDB.REDIRECTS [ON|OFF]"))
        return
    context.redirects = choice == b"on"
    context.reply(OK)


# --- single-key data commands ------------------------------------------------------------


@command("get", 2, ["readonly", "fast"], (1, 1, 1), checks_arity=True)
def get(context: CommandContext, arguments: list[bytes]) -> None:
    if len(arguments) != 2:
        context.reply(encode_error(wrong_arity("get")))
        return
    value = context.read_local(context.now_ms, context.keyspace, arguments[1])
    if value is NOT_LOCAL:
        context.submit(Get(context.keyspace, arguments[1]), render_bulk, "get")
    else:
        context.reply_when_durable(encode_bulk(value), FAST_GET)  # type: ignore[arg-type]


@command("strlen", 2, ["readonly", "fast"], (1, 1, 1))
def strlen(context: CommandContext, arguments: list[bytes]) -> None:
    context.submit(Get(context.keyspace, arguments[1]), render_length, "strlen")


@command("set", -3, ["write", "denyoom"], (1, 1, 1), checks_arity=True)
def set_(context: CommandContext, arguments: list[bytes]) -> None:
    if len(arguments) < 3:
        context.reply(encode_error(wrong_arity("set")))
        return
    if len(arguments) == 3:
        if context.runtime.write_local(context.keyspace, arguments[1], arguments[2]):
            context.reply_when_durable(OK, FAST_SET)
        else:
            operation = Put(context.keyspace, arguments[1], arguments[2])
            context.submit(operation, render_set, "set")
        return
    condition = PutCondition.ALWAYS
    expire_at_ms: int | None = None
    keep_expiry = False
    return_previous = False
    index = 3
    while index < len(arguments):
        option = arguments[index].upper()
        if option == b"NX" and condition is PutCondition.ALWAYS:
            condition = PutCondition.IF_ABSENT
        elif option == b"XX" and condition is PutCondition.ALWAYS:
            condition = PutCondition.IF_PRESENT
        elif option == b"GET" and not return_previous:
            return_previous = True
        elif option == b"KEEPTTL" and expire_at_ms is None and not keep_expiry:
            keep_expiry = True
        elif (
            option in (b"EX", b"PX", b"EXAT", b"PXAT") and expire_at_ms is None and not keep_expiry
        ):
            if index + 1 >= len(arguments):
                context.reply(SYNTAX_ERROR)
                return
            amount = parse_integer(arguments[index + 1])
            if amount is None:
                context.reply(NOT_INTEGER)
                return
            expire_at_ms = _expiry(option, amount)
            if expire_at_ms is None:
                context.reply(encode_error("ERR invalid expire time in 'set' command"))
                return
            index += 1
        else:
            context.reply(SYNTAX_ERROR)
            return
        index += 1
    operation = Put(
        context.keyspace,
        arguments[1],
        arguments[2],
        condition,
        expire_at_ms,
        keep_expiry,
        return_previous,
    )
    context.submit(operation, render_bulk if return_previous else render_set, "set")


def _expiry(option: bytes, amount: int) -> int | None:
    """The absolute expiry in ms, or None when invalid (not positive, or past int64 as in
    Redis: the stored record keeps the expiry as a signed 64-bit integer)."""
    if amount <= 0:
        return None
    now_ms = time.time_ns() // 1_000_000
    if option == b"EX":
        expire_at_ms = now_ms + amount * 1000
    elif option == b"PX":
        expire_at_ms = now_ms + amount
    elif option == b"EXAT":
        expire_at_ms = amount * 1000
    else:
        expire_at_ms = amount
    return expire_at_ms if expire_at_ms < 2**63 else None


@command("append", 3, ["write", "denyoom"], (1, 1, 1))
def append(context: CommandContext, arguments: list[bytes]) -> None:
    context.submit(Append(context.keyspace, arguments[1], arguments[2]), render_integer, "append")


def _increment(context: CommandContext, key: bytes, delta: int) -> None:
    context.submit(Increment(context.keyspace, key, delta), render_integer, "incr")


@command("incr", 2, ["write", "denyoom", "fast"], (1, 1, 1))
def incr(context: CommandContext, arguments: list[bytes]) -> None:
    _increment(context, arguments[1], 1)


@command("decr", 2, ["write", "denyoom", "fast"], (1, 1, 1))
def decr(context: CommandContext, arguments: list[bytes]) -> None:
    _increment(context, arguments[1], -1)


@command("incrby", 3, ["write", "denyoom", "fast"], (1, 1, 1))
def incrby(context: CommandContext, arguments: list[bytes]) -> None:
    delta = parse_integer(arguments[2])
    if delta is None:
        context.reply(NOT_INTEGER)
    else:
        _increment(context, arguments[1], delta)


@command("decrby", 3, ["write", "denyoom", "fast"], (1, 1, 1))
def decrby(context: CommandContext, arguments: list[bytes]) -> None:
    delta = parse_integer(arguments[2])
    if delta is None:
        context.reply(NOT_INTEGER)
    elif delta == -(2**63):  # its negation does not fit in 64 bits; Redis's own text
        context.reply(encode_error("ERR decrement would overflow"))
    else:
        _increment(context, arguments[1], -delta)


# --- commands over several keys ----------------------------------------------------------


@command("mget", -2, ["readonly", "fast"], (1, -1, 1))
def mget(context: CommandContext, arguments: list[bytes]) -> None:
    keys = arguments[1:]

    def finish(outcomes: list[Outcome]) -> bytes:
        # Every value here is a string, so Redis's nil-for-wrong-type never applies; an
        # error (an owner unreachable, a timeout) fails the command rather than passing
        # for a missing key.
        return _first_error(outcomes) or encode_array([o.value for o in outcomes])  # type: ignore[misc]

    gather = Gather(context, len(keys), finish, "mget")
    for index, key in enumerate(keys):
        gather.run(context, index, Get(context.keyspace, key))


@command("mset", -3, ["write", "denyoom"], (1, -1, 2))
def mset(context: CommandContext, arguments: list[bytes]) -> None:
    if len(arguments) % 2 != 1:
        context.reply(encode_error(wrong_arity("mset")))
        return
    pairs = list(zip(arguments[1::2], arguments[2::2], strict=True))

    def finish(outcomes: list[Outcome]) -> bytes:
        return _first_error(outcomes) or OK

    gather = Gather(context, len(pairs), finish, "mset")
    for index, (key, value) in enumerate(pairs):
        gather.run(context, index, Put(context.keyspace, key, value))


def _count_true(outcomes: list[Outcome]) -> bytes:
    return _first_error(outcomes) or encode_integer(sum(1 for o in outcomes if o.value))


@command("del", -2, ["write"], (1, -1, 1))
def delete(context: CommandContext, arguments: list[bytes]) -> None:
    keys = arguments[1:]
    gather = Gather(context, len(keys), _count_true, "del")
    for index, key in enumerate(keys):
        gather.run(context, index, Delete(context.keyspace, key))


@command("unlink", -2, ["write", "fast"], (1, -1, 1))
def unlink(context: CommandContext, arguments: list[bytes]) -> None:
    """The same as DEL here: values are freed right away."""
    delete(context, arguments)


@command("exists", -2, ["readonly", "fast"], (1, -1, 1))
def exists(context: CommandContext, arguments: list[bytes]) -> None:
    keys = arguments[1:]

    def finish(outcomes: list[Outcome]) -> bytes:
        error = _first_error(outcomes)
        return error or encode_integer(sum(1 for o in outcomes if o.value is not None))

    gather = Gather(context, len(keys), finish, "exists")
    for index, key in enumerate(keys):
        gather.run(context, index, Get(context.keyspace, key))


# --- whole-keyspace commands -------------------------------------------------------------


def _partition_ids(context: CommandContext) -> tuple[int, ...]:
    """The keyspace's partitions in id order; cursors hold positions in this list."""
    placement = context.runtime.node.partition_map.keyspaces.get(context.keyspace)
    return () if placement is None else placement.partition_ids


def _count_keys(
    context: CommandContext, finish: Callable[[int], bytes], name: str | None = None
) -> None:
    partition_ids = _partition_ids(context)

    def total(outcomes: list[Outcome]) -> bytes:
        return _first_error(outcomes) or finish(sum(int(o.value) for o in outcomes))  # type: ignore[call-overload]

    gather = Gather(context, len(partition_ids), total, name)
    for index, partition in enumerate(partition_ids):
        gather.run(context, index, CountPartition(context.keyspace, partition))


@command("dbsize", 1, ["readonly", "fast"])
def dbsize(context: CommandContext, arguments: list[bytes]) -> None:
    _count_keys(context, encode_integer, "count")  # "count" is a read in runtime.metrics


@command("scan", -2, ["readonly"])
def scan(context: CommandContext, arguments: list[bytes]) -> None:
    cursor = parse_integer(arguments[1])
    if cursor is None or cursor < 0:
        context.reply(encode_error("ERR invalid cursor"))
        return
    pattern: str | None = None
    count = 10
    index = 2
    while index < len(arguments):
        option = arguments[index].upper()
        if index + 1 >= len(arguments):
            context.reply(SYNTAX_ERROR)
            return
        if option == b"MATCH":
            pattern = arguments[index + 1].decode("latin-1")
        elif option == b"COUNT":
            parsed = parse_integer(arguments[index + 1])
            if parsed is None or parsed < 1:
                context.reply(SYNTAX_ERROR if parsed is not None else NOT_INTEGER)
                return
            count = min(parsed, context.runtime.settings.limits.max_scan_limit)
        elif option == b"TYPE":
            if arguments[index + 1].lower() != b"string":
                context.reply(encode_array([b"0", []]))
                return
        else:
            context.reply(SYNTAX_ERROR)
            return
        index += 2
    partition_ids = _partition_ids(context)
    partition_count = len(partition_ids)
    partition = cursor % SCAN_PARTITION_SLOTS  # a position in `partition_ids`
    token = cursor // SCAN_PARTITION_SLOTS
    # An unknown token (evicted or from another node) restarts its partition: SCAN may
    # return duplicates, never skip a key that exists for the whole iteration.
    start = context.server.scan_cursors.pop(token, (partition, b""))[1] if token else b""
    if partition >= partition_count:
        context.reply(encode_array([b"0", []]))
        return
    fill = _recording(context, "scan", context.deferred())

    def finished(outcome: Outcome) -> None:
        if outcome.error is not None:
            fill(_error(outcome))
            return
        page = outcome.value
        assert isinstance(page, ScanPage)
        keys = [key for key, _ in page.items]
        if pattern is not None:
            keys = [key for key in keys if fnmatch.fnmatchcase(key.decode("latin-1"), pattern)]
        if page.next_start is not None:
            next_cursor = _remember_cursor(context.server, partition, page.next_start)
        elif partition + 1 < partition_count:
            next_cursor = partition + 1
        else:
            next_cursor = 0
        fill(encode_array([str(next_cursor).encode(), keys]))  # type: ignore[list-item]

    operation = ScanPartition(
        context.keyspace, partition_ids[partition], start, count, keys_only=True
    )
    context.runtime.submit(operation, finished)


def _remember_cursor(server: RespServer, partition: int, start: bytes) -> int:
    cursors = server.scan_cursors
    if len(cursors) >= SCAN_CURSOR_TABLE_MAX:
        del cursors[next(iter(cursors))]
    token = server.next_scan_token
    server.next_scan_token += 1
    cursors[token] = (partition, start)
    return token * SCAN_PARTITION_SLOTS + partition


RANGE_LIMIT_DEFAULT = 100
# Range pages in flight: the event loop keeps only weak references to tasks.
_RANGE_TASKS: set[asyncio.Task[Outcome]] = set()


@command("quorumdb.range", -3, ["readonly"])
def key_range(context: CommandContext, arguments: list[bytes]) -> None:
    """QUORUMDB.RANGE start end [LIMIT n] [AFTER token] [KEYSONLY]: the keys of
    [start, end) in key order (an empty end: no end), as [next token or "", [key, value,
    ...]] (keys only with KEYSONLY). Any node coordinates; see core/range_scan.py."""
    options = _range_options(arguments[3:])
    if options is None:
        context.reply(SYNTAX_ERROR)
        return
    limit, token, keys_only = options
    start, end = arguments[1], arguments[2] or None
    limit_max = context.runtime.settings.limits.max_scan_limit
    try:
        position = page_start(start, end, limit, limit_max, token)
    except RangeScanError as error:
        context.reply(encode_error(f"ERR {error}"))
        return
    if position is None:
        context.reply(encode_array([b"", []]))
        return
    fill = _recording(context, "range", context.deferred())
    runtime = context.runtime
    coroutine = range_scan_page(
        runtime.call,
        runtime.node.partition_map,
        context.keyspace,
        position,
        end,
        limit,
        keys_only,
        limit_max,
    )
    task = runtime.loop.create_task(coroutine)
    _RANGE_TASKS.add(task)

    def finished(task: asyncio.Task[Outcome]) -> None:
        _RANGE_TASKS.discard(task)
        if task.cancelled() or task.exception() is not None:
            LOG.error("range scan failed", exc_info=None if task.cancelled() else task.exception())
            fill(encode_error("ERR internal error; see the node's log"))
            return
        fill(_render_range(task.result(), keys_only))

    task.add_done_callback(finished)


def _range_options(options: list[bytes]) -> tuple[int, str | None, bool] | None:
    """LIMIT, AFTER and KEYSONLY, each at most once; None on anything else."""
    limit: int | None = None
    token: str | None = None
    keys_only = False
    index = 0
    while index < len(options):
        option = options[index].upper()
        has_value = index + 1 < len(options)
        if option == b"KEYSONLY" and not keys_only:
            keys_only = True
            index += 1
            continue
        if option == b"LIMIT" and limit is None and has_value:
            limit = parse_integer(options[index + 1])
            if limit is None:
                return None
        elif option == b"AFTER" and token is None and has_value:
            token = options[index + 1].decode("latin-1")
        else:
            return None
        index += 2
    return (RANGE_LIMIT_DEFAULT if limit is None else limit), token, keys_only


def _render_range(outcome: Outcome, keys_only: bool) -> bytes:
    if outcome.error is not None:
        return _error(outcome)
    page = outcome.value
    assert isinstance(page, RangePage)
    flat: list[ArrayItem] = []
    for key, value in page.items:
        flat.append(key)
        if not keys_only:
            flat.append(value)
    token = b"" if page.resume is None else encode_token(page.resume).encode()
    return encode_array([token, flat])


@command("info", -1, ["slow"])
def info(context: CommandContext, arguments: list[bytes]) -> None:
    wanted = {argument.decode("utf-8", "replace").lower() for argument in arguments[1:]}
    if not wanted or wanted & {"all", "default", "everything"}:
        wanted = {"server", "clients", "stats", "persistence", "keyspace"}

    def finish(key_count: int) -> bytes:
        return encode_bulk(_info_text(context, wanted, key_count).encode())

    if "keyspace" in wanted:
        _count_keys(context, finish)
    else:
        context.reply(finish(0))


def _info_text(context: CommandContext, sections: set[str], key_count: int) -> str:
    runtime = context.runtime
    metrics = runtime.metrics
    settings = runtime.settings
    uptime_seconds = (int(time.time() * 1000) - runtime.started_at_ms) // 1000
    reads, writes = metrics.read_write_counts()
    blocks: list[str] = []
    if "server" in sections:
        blocks.append(
            "# Server\r\n"
            "redis_version:7.2.0\r\n"
            f"quorumdb_version:{__version__}\r\n"
            "redis_mode:cluster\r\n"
            f"os:{platform.system()} {platform.release()} {platform.machine()}\r\n"
            f"process_id:{os.getpid()}\r\n"
            f"node_id:{settings.node_id}\r\n"
            f"tcp_port:{settings.member.resp_port}\r\n"
            f"uptime_in_seconds:{uptime_seconds}\r\n"
            f"cluster_members:{len(settings.members)}\r\n"
        )
    if "clients" in sections:
        blocks.append(
            "# Clients\r\n"
            f"connected_clients:{metrics.active_clients}\r\n"
            f"maxclients:{settings.max_clients}\r\n"
        )
    if "persistence" in sections:
        commit = runtime.commit
        logged = runtime.logged_storage
        blocks.append(
            "# Persistence\r\n"
            f"fsync_policy:{settings.fsync.value}\r\n"
            f"group_commits:{commit.group_count}\r\n"
            f"fsyncs:{commit.sync_count}\r\n"
            f"writes_persisted:{commit.write_count}\r\n"
            f"storage_bytes:{runtime.storage.size_bytes()}\r\n"
            f"wal_bytes:{logged.log_size_bytes() if logged else 0}\r\n"
            f"wal_spare_bytes:{logged.log_spare_bytes() if logged else 0}\r\n"
            f"checkpoints:{logged.checkpoint_count if logged else 0}\r\n"
            f"memtable_writes:{logged.memtable_write_count if logged else 0}\r\n"
            f"memtable_bytes:{logged.memtable_bytes if logged else 0}\r\n"
            f"memtable_flushes:{logged.memtable_flush_count if logged else 0}\r\n"
            f"read_cache_bytes:{commit.cache.size_bytes}\r\n"
            f"read_cache_hits:{commit.cache.hit_count}\r\n"
            f"read_cache_misses:{commit.cache.miss_count}\r\n"
            f"reply_cache_bytes:{commit.replies.size_bytes}\r\n"
            f"reply_cache_hits:{commit.replies.hit_count}\r\n"
            f"reply_cache_misses:{commit.replies.miss_count}\r\n"
        )
    if "stats" in sections:
        blocks.append(
            "# Stats\r\n"
            f"total_connections_received:{metrics.total_connections}\r\n"
            f"rejected_connections:{metrics.rejected_connections}\r\n"
            f"total_commands_processed:{metrics.total_requests()}\r\n"
            f"total_reads_processed:{reads}\r\n"
            f"total_writes_processed:{writes}\r\n"
            f"protocol_errors:{metrics.protocol_errors}\r\n"
            f"peer_messages_sent:{runtime.transport.sent_message_count}\r\n"
            f"peer_messages_received:{runtime.transport.received_message_count}\r\n"
        )
    if "keyspace" in sections:
        blocks.append(f"# Keyspace\r\ndb0:keys={key_count}\r\n")
    return "\r\n".join(blocks)


# Commands defined in sibling modules register themselves on import, before the table
# below is completed with upper-case names.
from quorumdb.api import resp_replication_commands  # noqa: E402, F401

# Clients send command names in any case; the usual upper and lower case hit the table
# directly, anything else is lowered by the server before a second lookup.
for _name in list(COMMANDS):
    COMMANDS[_name.upper()] = COMMANDS[_name]
