"""Core messages to and from msgpack bytes, for frames between nodes.

A registered record travels as a plain msgpack array `[tag, *fields]`, with the whole
message packed by one `packb` call: the previous layout (a msgpack extension type per
record, whose payload was itself a nested `packb`) cost three packers and three unpackers
per forwarded request and was about half of the Python time of a forward's round trip.

Arrays carry no type, so decoding follows a schema: a decoder per record type that has
fields holding a nested record, a tuple of records, an enum, or "a scalar or a record"
(`Outcome.value`); every other field is taken as msgpack gave it. Anything that does not
fit (an unknown tag, a wrong field count, a bad enum value, a non-record where a record
belongs) raises `WireError`, so a peer sending garbage can only get itself disconnected.
A top-level scalar is passed through as is (the transport's tests send plain scalars);
the node refuses it as an unexpected message.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from enum import Enum
from operator import attrgetter
from typing import Any

import msgpack

from quorumdb.core import membership, messages, transfer
from quorumdb.core.controller import raft_log, raft_messages
from quorumdb.core.controller.raft_configuration import Configuration
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.replication import log_format
from quorumdb.core.replication import messages as replication_messages

_RECORD_TYPES: tuple[type, ...] = (
    messages.Get,
    messages.Put,
    messages.Delete,
    messages.Increment,
    messages.Append,
    messages.ScanPartition,
    messages.CountPartition,
    messages.CreateKeyspace,
    messages.ScanPage,
    messages.Outcome,
    messages.ForwardRequest,
    messages.ForwardReply,
    KeyspaceConfig,
    raft_messages.RequestVote,
    raft_messages.RequestVoteReply,
    raft_messages.AppendEntries,
    raft_messages.AppendEntriesReply,
    raft_messages.InstallSnapshot,
    raft_messages.InstallSnapshotReply,
    raft_log.LogEntry,
    raft_log.Snapshot,
    messages.ChangeMetadata,
    transfer.TransferOpen,
    transfer.TransferData,
    transfer.TransferAck,
    transfer.TransferAbort,
    membership.MemberUpdate,
    membership.Fact,
    membership.Ping,
    membership.Ack,
    membership.PingRequest,
    membership.Nack,
    membership.Gossip,
    membership.Join,
    membership.JoinReply,
    replication_messages.Replicate,
    replication_messages.ReplicateReply,
    replication_messages.PositionQuery,
    replication_messages.PositionReply,
    replication_messages.LeaderSuspicion,
    replication_messages.ReplicaSnapshot,
    replication_messages.ReplicaSnapshotAck,  # new records go last: a tag is a record's position
)
_RECORD_TAGS = {record_type: tag for tag, record_type in enumerate(_RECORD_TYPES)}


class WireError(ValueError):
    """A peer sent a well-framed payload that is not a valid message."""


# --- encoding ----------------------------------------------------------------------------


def _field_getter(record_type: type) -> Callable[[Any], tuple[Any, ...]]:
    """The record's field values as a tuple, in declaration order, read in C."""
    names = [field.name for field in dataclasses.fields(record_type)]
    if len(names) == 1:
        single = attrgetter(names[0])
        return lambda value: (single(value),)
    return attrgetter(*names)


_FIELD_GETTERS = {record_type: _field_getter(record_type) for record_type in _RECORD_TYPES}


def _default(value: Any) -> Any:
    """Called by the packer for what msgpack cannot encode itself: a record becomes
    `[tag, *fields]` (its fields are then packed in the same call), an enum its value
    (the decoder's schema knows which enum a field holds)."""
    value_type = type(value)
    tag = _RECORD_TAGS.get(value_type)
    if tag is not None:
        return (tag, *_FIELD_GETTERS[value_type](value))
    if isinstance(value, Enum):
        return value.value
    if value_type is frozenset:  # the node ids of a Raft configuration
        return sorted(value)
    raise TypeError(f"cannot encode {value_type.__name__} for the wire")


class _ThreadPacker(threading.local):
    """One reusable Packer per thread: `msgpack.packb` builds a new one on every call."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(default=_default, use_bin_type=True).pack


_packer = _ThreadPacker()


def pack_message(message: object) -> bytes:
    """Serialize one message (any registered record, or a plain scalar) to msgpack bytes."""
    result: bytes = _packer.pack(message)
    return result


# --- decoding ----------------------------------------------------------------------------


def _record(items: Any) -> Any:
    """The record that `items` (a decoded `[tag, *fields]` array) encodes."""
    if type(items) is not tuple or not items:
        raise WireError("malformed record: not a tagged array")
    tag = items[0]
    if type(tag) is not int or not 0 <= tag < len(_RECORD_TYPES):
        raise WireError(f"malformed record: unknown tag {tag!r}")
    try:
        return _DECODERS[tag](items)
    except WireError:
        raise
    except (LookupError, TypeError, ValueError) as error:  # wrong field count, bad enum
        raise WireError(f"malformed {_RECORD_TYPES[tag].__name__}: {error!r}") from None


def _records(items: Any) -> tuple[Any, ...]:
    if type(items) is not tuple:
        raise WireError("malformed record list")
    return tuple(_record(item) for item in items)


# The schema: a decoder per record that has a field holding a record or an enum. Each
# unpacks the array by position, so a wrong field count fails (ValueError), and looks
# enums up by value in a dict, several times cheaper than calling the enum class.
# tests/test_wire.py round-trips every record with distinct field values, which pins
# these positions to the dataclasses' field order.
_PUT_CONDITIONS = {condition.value: condition for condition in messages.PutCondition}
_ERROR_CODES = {code.value: code for code in ErrorCode}


def _put(items: tuple[Any, ...]) -> messages.Put:
    (
        _,
        keyspace,
        key,
        value,
        condition,
        expire_at_ms,
        keep_expiry,
        return_previous,
        sync,
        generate,
    ) = items
    return messages.Put(
        keyspace,
        key,
        value,
        _PUT_CONDITIONS[condition],
        expire_at_ms,
        keep_expiry,
        return_previous,
        sync,
        generate,
    )


def _get(items: tuple[Any, ...]) -> messages.Get:
    _, keyspace, key, consistency, min_position, max_lag_ms = items
    if min_position is not None:
        epoch, sequence = min_position
        min_position = (epoch, sequence)
    return messages.Get(keyspace, key, consistency, min_position, max_lag_ms)


def _outcome(items: tuple[Any, ...]) -> messages.Outcome:
    """`value` is bytes, None, a bool or an int as it is; an array there is a record (a
    scan page), never a plain tuple."""
    _, value, error, message, acks, position = items
    if type(value) is tuple:
        value = _record(value)
    if position is not None:
        epoch, sequence = position
        position = (epoch, sequence)
    code = None if error is None else _ERROR_CODES[error]
    return messages.Outcome(value, code, message, acks, position)


def _forward_request(items: tuple[Any, ...]) -> messages.ForwardRequest:
    _, forward_id, map_version, operation, incarnation = items
    return messages.ForwardRequest(forward_id, map_version, _record(operation), incarnation)


def _forward_reply(items: tuple[Any, ...]) -> messages.ForwardReply:
    _, forward_id, outcome, incarnation = items
    return messages.ForwardReply(forward_id, _record(outcome), incarnation)


def _create_keyspace(items: tuple[Any, ...]) -> messages.CreateKeyspace:
    _, config = items
    return messages.CreateKeyspace(_record(config))


def _configuration(items: Any) -> Configuration | None:
    if items is None:
        return None
    voters, learners = items
    if not all(type(node_id) is str for node_id in (*voters, *learners)):
        raise WireError("malformed configuration: node ids must be strings")
    return Configuration(frozenset(voters), frozenset(learners))


_ENTRY_KINDS = {kind.value: kind for kind in raft_log.EntryKind}


def _log_entry(items: tuple[Any, ...]) -> raft_log.LogEntry:
    _, index, term, kind, command, configuration = items
    return raft_log.LogEntry(
        index, term, _ENTRY_KINDS[kind], command, _configuration(configuration)
    )


def _snapshot(items: tuple[Any, ...]) -> raft_log.Snapshot:
    _, index, term, configuration, data = items
    decoded = _configuration(configuration)
    if decoded is None:
        raise WireError("malformed snapshot: no configuration")
    return raft_log.Snapshot(index, term, decoded, data)


def _append_entries(items: tuple[Any, ...]) -> raft_messages.AppendEntries:
    _, term, previous_index, previous_term, entries, leader_commit, heartbeat_round = items
    decoded = _records(entries)
    if not all(type(entry) is raft_log.LogEntry for entry in decoded):
        raise WireError("malformed append: entries must be log entries")
    return raft_messages.AppendEntries(
        term, previous_index, previous_term, decoded, leader_commit, heartbeat_round
    )


def _install_snapshot(items: tuple[Any, ...]) -> raft_messages.InstallSnapshot:
    _, term, snapshot = items
    decoded = _record(snapshot)
    if type(decoded) is not raft_log.Snapshot:
        raise WireError("malformed snapshot message")
    return raft_messages.InstallSnapshot(term, decoded)


def _transfer_key(items: Any) -> transfer.TransferKey:
    plan_id, transfer_index, attempt = items
    if not all(type(value) is int for value in (plan_id, transfer_index, attempt)):
        raise WireError("malformed transfer key")
    return transfer.TransferKey(plan_id, transfer_index, attempt)


def _transfer_message(record_type: type) -> Callable[[tuple[Any, ...]], Any]:
    """Transfer messages lead with their key, a named tuple msgpack sends as an array."""
    return lambda items: record_type(_transfer_key(items[1]), *items[2:])


_MEMBER_STATES = {state.value: state for state in membership.MemberState}


def _member_update(items: tuple[Any, ...]) -> membership.MemberUpdate:
    _, node_id, address, state, incarnation, suspecters = items
    if not all(type(suspecter) is str for suspecter in suspecters):
        raise WireError("malformed member update: suspecters must be node ids")
    return membership.MemberUpdate(
        node_id, address, _MEMBER_STATES[state], incarnation, tuple(suspecters)
    )


def _gossiping(record_type: type) -> Callable[[tuple[Any, ...]], Any]:
    """Membership messages end with their piggy-backed updates and facts."""

    def decode(items: tuple[Any, ...]) -> Any:
        updates, facts = _records(items[-2]), _records(items[-1])
        if not all(type(update) is membership.MemberUpdate for update in updates):
            raise WireError("malformed gossip: updates must be member updates")
        if not all(type(fact) is membership.Fact for fact in facts):
            raise WireError("malformed gossip: facts must be facts")
        return record_type(*items[1:-2], updates, facts)

    return decode


def _position(items: Any) -> log_format.Position:
    epoch, sequence = items
    if type(epoch) is not int or type(sequence) is not int:
        raise WireError("malformed position")
    return log_format.Position(epoch, sequence)


def _entry(items: Any) -> log_format.Entry:
    epoch, sequence, changes, statement = items
    if statement is not None and type(statement) is not bytes:
        raise WireError("malformed log entry: a statement is bytes")
    decoded: list[log_format.Change] = []
    for key, record in changes:
        if type(key) is not bytes or (record is not None and type(record) is not bytes):
            raise WireError("malformed log entry: keys and records are bytes")
        decoded.append(log_format.Change(key, record))
    if type(epoch) is not int or type(sequence) is not int:
        raise WireError("malformed log entry position")
    return log_format.Entry(epoch, sequence, tuple(decoded), statement)


def _replicate(items: tuple[Any, ...]) -> replication_messages.Replicate:
    _, keyspace, partition, epoch, prev, entries, leader_last, trim_through, sent_ms = items
    return replication_messages.Replicate(
        keyspace,
        partition,
        epoch,
        _position(prev),
        tuple(_entry(entry) for entry in entries),
        _position(leader_last),
        trim_through,
        sent_ms,
    )


def _replica_snapshot(items: tuple[Any, ...]) -> replication_messages.ReplicaSnapshot:
    _, keyspace, partition, epoch, snapshot_id, chunk, records, done, base, epoch_starts = items
    pairs: list[tuple[bytes, bytes]] = []
    for key, record in records:
        if type(key) is not bytes or type(record) is not bytes:
            raise WireError("malformed snapshot chunk: keys and records are bytes")
        pairs.append((key, record))
    if type(epoch_starts) is not tuple or len(epoch_starts) > log_format.EPOCH_STARTS_MAX:
        raise WireError("malformed snapshot chunk: epoch starts are a bounded list")
    return replication_messages.ReplicaSnapshot(
        keyspace,
        partition,
        epoch,
        snapshot_id,
        chunk,
        tuple(pairs),
        done,
        _position(base),
        tuple(_position(start) for start in epoch_starts),
    )


def _position_reply(items: tuple[Any, ...]) -> replication_messages.PositionReply:
    _, keyspace, partition, epoch, last = items
    return replication_messages.PositionReply(keyspace, partition, epoch, _position(last))


def _plain(record_type: type) -> Callable[[tuple[Any, ...]], Any]:
    """Decoder of a record whose fields are all plain msgpack values."""
    return lambda items: record_type(*items[1:])


_SCHEMA: dict[type, Callable[[tuple[Any, ...]], Any]] = {
    messages.Put: _put,
    messages.Get: _get,
    messages.Outcome: _outcome,
    messages.ForwardRequest: _forward_request,
    messages.ForwardReply: _forward_reply,
    messages.CreateKeyspace: _create_keyspace,
    raft_log.LogEntry: _log_entry,
    raft_log.Snapshot: _snapshot,
    raft_messages.AppendEntries: _append_entries,
    raft_messages.InstallSnapshot: _install_snapshot,
    transfer.TransferOpen: _transfer_message(transfer.TransferOpen),
    transfer.TransferData: _transfer_message(transfer.TransferData),
    transfer.TransferAck: _transfer_message(transfer.TransferAck),
    transfer.TransferAbort: _transfer_message(transfer.TransferAbort),
    membership.MemberUpdate: _member_update,
    membership.Ping: _gossiping(membership.Ping),
    membership.Ack: _gossiping(membership.Ack),
    membership.PingRequest: _gossiping(membership.PingRequest),
    membership.Nack: _gossiping(membership.Nack),
    membership.Gossip: _gossiping(membership.Gossip),
    membership.JoinReply: _gossiping(membership.JoinReply),
    replication_messages.Replicate: _replicate,
    replication_messages.PositionReply: _position_reply,
    replication_messages.ReplicaSnapshot: _replica_snapshot,
}
_DECODERS = tuple(_SCHEMA.get(record_type) or _plain(record_type) for record_type in _RECORD_TYPES)


def _no_extensions(code: int, data: bytes) -> Any:
    raise WireError(f"unexpected extension type {code}")


def unpack_message(payload: bytes) -> object:
    """Inverse of `pack_message`; raises WireError on anything malformed."""
    try:
        items = msgpack.unpackb(payload, ext_hook=_no_extensions, raw=False, use_list=False)
    except WireError:
        raise
    except Exception as error:  # msgpack raises several types for corrupt input
        raise WireError(f"undecodable payload: {error}") from None
    if type(items) is tuple:
        return _record(items)
    if type(items) in _SCALARS:
        return items
    raise WireError(f"not a message: {type(items).__name__}")


_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
