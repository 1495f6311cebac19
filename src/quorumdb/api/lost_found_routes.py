"""HTTP routes of this node's lost+found: list the writes replication undid here, write
one again through the normal write path (replay), or discard it after review.

An entry is never removed: replaying or discarding records a resolution next to it (see
`core/replication/lost_found.py`), so the listing keeps the history and a second replay
is refused. The resolution is written by the core (the ResolveLostWrite operation), like
every other write.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

from quorumdb.api.admin_routes import Call, RaiseFor
from quorumdb.api.http_common import ApiError, Encoding, encode_bytes, replication_fields
from quorumdb.core.messages import Delete, Outcome, Put, ResolveLostWrite
from quorumdb.core.replication.lost_found import (
    LIST_LIMIT_MAX,
    LostFoundEntry,
    LostWriteIdError,
    Resolution,
    list_entries,
    lost_write_id,
    parse_lost_write_id,
    pending_count,
    read_entry,
)
from quorumdb.runtime.node_runtime import NodeRuntime, now_ms


def entry_document(node_id: str, entry: LostFoundEntry, encoding: Encoding) -> dict[str, Any]:
    lost = entry.lost
    key_text, key_encoding = encode_bytes(lost.key, encoding)
    document: dict[str, Any] = {
        "id": lost_write_id(node_id, entry.storage_key),
        "node": node_id,
        "keyspace": lost.keyspace,
        "partition": lost.partition,
        "epoch": lost.epoch,
        "sequence": lost.sequence,
        "change_index": lost.change_index,
        "key": key_text,
        "key_encoding": key_encoding,
        "deleted": lost.record is None,
        "value": None,
        "value_encoding": None,
        "expire_at_ms": None,
        "replayed": entry.resolution is Resolution.REPLAYED,
        "discarded": entry.resolution is Resolution.DISCARDED,
    }
    value = lost.value
    if value is not None:
        document["value"], document["value_encoding"] = encode_bytes(value[0], encoding)
        document["expire_at_ms"] = value[1]
    return document


def add_lost_found_routes(
    app: FastAPI, runtime: NodeRuntime, call: Call, raise_for: RaiseFor
) -> None:
    node_id = runtime.settings.node_id
    replaying: set[bytes] = set()  # entries whose replay is writing (refuse a second one)

    def local_key(entry_id: str) -> bytes:
        try:
            owner, storage_key = parse_lost_write_id(entry_id)
        except LostWriteIdError as error:
            raise ApiError(400, "invalid-argument", str(error)) from None
        if owner != node_id:
            message = f"entry {entry_id} is kept on node {owner}, this is {node_id}: ask it"
            raise ApiError(421, "wrong-node", message)
        return storage_key

    def pending_entry(entry_id: str) -> LostFoundEntry:
        storage_key = local_key(entry_id)
        entry = read_entry(runtime.node.storage, storage_key)
        if entry is None:
            raise ApiError(404, "not-found", f"no lost+found entry {entry_id} on {node_id}")
        if entry.resolution is not None:
            message = f"entry {entry_id} was {entry.resolution.value} already"
            raise ApiError(409, "already-resolved", message)
        if storage_key in replaying:
            raise ApiError(409, "replay-running", f"entry {entry_id} is being replayed")
        return entry

    async def resolve(entry: LostFoundEntry, resolution: Resolution) -> None:
        outcome = await call(ResolveLostWrite(entry.storage_key, resolution), "lostfound_resolve")
        raise_for(outcome)
        entry_id = lost_write_id(node_id, entry.storage_key)
        if outcome.value is None:
            raise ApiError(404, "not-found", f"no lost+found entry {entry_id} on {node_id}")
        if outcome.value is not True:
            message = f"entry {entry_id} was {outcome.message.removeprefix('already ')} already"
            raise ApiError(409, "already-resolved", message)

    @app.get("/v1/lostfound", summary="This node's lost+found: writes replication undid here")
    async def list_lost_found(
        limit: int = Query(100, ge=1, le=LIST_LIMIT_MAX),
        after: str | None = Query(None, description="The previous page's `next`."),
        encoding: Encoding = Query("utf-8", description="Of keys and values."),
    ) -> dict[str, Any]:
        try:
            start = None if after is None else bytes.fromhex(after)
        except ValueError:
            raise ApiError(400, "invalid-argument", "after is not hexadecimal") from None
        page = list_entries(runtime.node.storage, start, limit)
        return {
            "node": node_id,
            "pending": pending_count(runtime.node.storage),
            "entries": [entry_document(node_id, entry, encoding) for entry in page.entries],
            "next": None if page.next_after is None else page.next_after.hex(),
        }

    @app.get("/v1/lostfound/{entry_id}", summary="One lost+found entry of this node")
    async def show_lost_write(entry_id: str, encoding: Encoding = Query("utf-8")) -> dict[str, Any]:
        entry = read_entry(runtime.node.storage, local_key(entry_id))
        if entry is None:
            raise ApiError(404, "not-found", f"no lost+found entry {entry_id} on {node_id}")
        return entry_document(node_id, entry, encoding)

    @app.post(
        "/v1/lostfound/{entry_id}/replay",
        summary="Write a lost write again (through the key's leader), then mark it replayed",
    )
    async def replay_lost_write(entry_id: str) -> dict[str, Any]:
        entry = pending_entry(entry_id)
        lost = entry.lost
        value = lost.value
        if value is not None and value[1] is not None and value[1] <= now_ms():
            message = f"the lost value of entry {entry_id} has expired; discard the entry"
            raise ApiError(409, "expired", message)
        operation: Put | Delete
        if value is None:
            operation = Delete(lost.keyspace, lost.key)
        else:
            operation = Put(lost.keyspace, lost.key, value[0], expire_at_ms=value[1])
        replaying.add(entry.storage_key)
        try:
            written: Outcome = await call(operation, "lostfound_replay")
            raise_for(written)  # not written (or unknown): the entry stays pending
            await resolve(entry, Resolution.REPLAYED)
        finally:
            replaying.discard(entry.storage_key)
        return {
            "id": entry_id,
            "replayed": True,
            "operation": "delete" if value is None else "put",
            **replication_fields(written),
        }

    @app.delete("/v1/lostfound/{entry_id}", summary="Discard a lost write after review")
    async def discard_lost_write(entry_id: str) -> dict[str, Any]:
        entry = pending_entry(entry_id)
        await resolve(entry, Resolution.DISCARDED)
        return {"id": entry_id, "discarded": True}
