"""HTTP/JSON API of a node (FastAPI): keys, scans, keyspaces, cluster view, health, metrics.

Keys and values are bytes; JSON carries them as UTF-8 text by default or as base64
with `encoding=base64`, so binary data round-trips exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from quorumdb import __version__
from quorumdb.api.admin_routes import MetadataRefused, add_admin_routes
from quorumdb.api.http_common import ApiError, Encoding
from quorumdb.api.http_common import encode_bytes as _encode
from quorumdb.api.http_common import replication_fields as _replication
from quorumdb.api.lost_found_routes import add_lost_found_routes
from quorumdb.api.prometheus import RateSampler, build_registry
from quorumdb.check.convergence import replica_digest
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig, KeyspaceConfigError
from quorumdb.core.messages import (
    CreateKeyspace,
    Delete,
    Get,
    Operation,
    Outcome,
    Put,
    PutCondition,
    ScanPage,
    ScanPartition,
)
from quorumdb.core.range_scan import RangePage, RangeScanError, encode_token, page_start
from quorumdb.core.records import live_value
from quorumdb.runtime.node_runtime import NodeRuntime, now_ms
from quorumdb.runtime.range_scan_driver import range_scan_page

Consistency = Literal["linearizable", "eventual", "session", "bounded"]
Sync = Literal["all", "majority", "semi", "async"]
_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_INTEGER: 400,
    ErrorCode.OVERFLOW: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNKNOWN_KEYSPACE: 404,
    ErrorCode.KEYSPACE_EXISTS: 409,
    ErrorCode.MOVED: 421,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.CORRUPT: 500,
    ErrorCode.INTERNAL: 500,
}


class PutBody(BaseModel):
    value: str = Field(description="The value, as text or base64 per `encoding`.")
    encoding: Encoding = "utf-8"
    expire_ms: int | None = Field(None, gt=0, description="Time to live in milliseconds.")
    if_absent: bool = Field(False, description="Write only if the key does not exist.")
    if_present: bool = Field(False, description="Write only if the key exists.")


class KeyspaceBody(BaseModel):
    name: str
    partitioning: str = Field("fixed:64", description="Strategy and parameter, e.g. fixed:256.")
    replication: str = Field("none", description="none, or single-leader")
    replicas: int = Field(1, description="Copies of each partition (single-leader: 1 to 7).")
    sync: str = Field(
        "majority", description="single-leader: all, majority, semi or async followers"
    )
    log_format: str = Field("row", description="single-leader: row or statement")
    deterministic: bool = Field(
        True, description="statement: rewrite server time and random ids into literals"
    )


def _decode(text: str, encoding: Encoding, what: str) -> bytes:
    if encoding == "utf-8":
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ApiError(400, "invalid-argument", f"{what} is not valid base64") from None


def _raise_for(outcome: Outcome) -> None:
    if outcome.error is not None:
        raise ApiError(_STATUS.get(outcome.error, 500), outcome.error.value, outcome.message)


def _encode_cursor(partition: int, start: bytes) -> str:
    raw = json.dumps([partition, base64.b64encode(start).decode()]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[int, bytes]:
    try:
        partition, start = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return int(partition), base64.b64decode(start)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, "invalid-argument", "malformed cursor") from None


def _range_item(key: bytes, value: bytes, encoding: Encoding, keys_only: bool) -> dict[str, str]:
    key_text, key_used = _encode(key, encoding)
    if keys_only:
        return {"key": key_text, "key_encoding": key_used}
    value_text, value_used = _encode(value, encoding)
    return {
        "key": key_text,
        "value": value_text,
        "key_encoding": key_used,
        "value_encoding": value_used,
    }


def create_app(runtime: NodeRuntime, sampler: RateSampler | None = None) -> FastAPI:
    sampler = sampler or RateSampler(runtime)
    registry = build_registry(runtime, sampler)
    app = FastAPI(
        title="quorumdb",
        version=__version__,
        description="HTTP/JSON API of one quorumdb node; any node answers for the whole cluster.",
    )

    async def call(operation: Operation, name: str) -> Outcome:
        started_ns = time.perf_counter_ns()
        outcome = await runtime.call(operation)
        runtime.metrics.record(name, time.perf_counter_ns() - started_ns, not outcome.ok)
        return outcome

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.code, "message": error.message}, error.status)

    @app.exception_handler(MetadataRefused)
    async def metadata_refused(request: Request, error: MetadataRefused) -> JSONResponse:
        return JSONResponse({"error": "refused", "message": error.message}, 409)

    add_admin_routes(app, runtime, call, _raise_for)
    add_lost_found_routes(app, runtime, call, _raise_for)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        return JSONResponse({"error": "invalid-argument", "message": details}, 400)

    @app.get("/healthz", summary="Liveness and storage health of this node")
    async def healthz() -> dict[str, Any]:
        healthy = not runtime.commit.failed
        if not healthy:
            raise ApiError(503, "unavailable", "storage failed")
        return {"status": "ok", "node": runtime.settings.node_id}

    @app.get("/v1/cluster", summary="Members, partitions and owners, map version")
    async def cluster() -> dict[str, Any]:
        document = runtime.node.partition_map.to_dict()
        document["node"] = runtime.settings.node_id
        detector = runtime.node.failure_detector
        for member in document["members"]:  # type: ignore[attr-defined]
            member["health"] = detector.health(member["node_id"])  # SWIM's view from here
        document["controller"] = runtime.node.controller.status()
        document["rebalance"] = runtime.node.controller.rebalance_status()
        document["replicas"] = runtime.node.replication.status(now_ms())
        return document

    @app.get(
        "/v1/replicas/digests",
        summary="A digest of every replica's live contents on this node (for convergence checks)",
    )
    async def replica_digests() -> dict[str, Any]:
        node = runtime.node
        current_ms = now_ms()
        rows: list[dict[str, Any]] = []
        for (keyspace, partition), replica in sorted(node.replication.by_partition.items()):
            live = [
                (key, value)
                for key, raw in scan_all(node.storage, keyspace, partition)
                if (value := live_value(raw, current_ms)) is not None
            ]
            last = replica.last
            rows.append(
                {
                    "node": runtime.settings.node_id,
                    "keyspace": keyspace,
                    "partition": partition,
                    "digest": replica_digest(live),
                    "position": [last.epoch, last.sequence],
                    "keys": len(live),
                }
            )
        return {"replicas": rows}

    @app.get("/v1/keyspaces", summary="List keyspaces")
    async def list_keyspaces() -> dict[str, Any]:
        placements = runtime.node.partition_map.keyspaces
        return {"keyspaces": [p.config.to_dict() for _, p in sorted(placements.items())]}

    @app.post("/v1/keyspaces", summary="Create a keyspace", status_code=201)
    async def create_keyspace(body: KeyspaceBody, response: Response) -> dict[str, Any]:
        try:
            config = KeyspaceConfig(
                body.name,
                body.partitioning,
                body.replicas,
                body.replication,
                body.sync,
                body.log_format,
                body.deterministic,
            ).canonical()
            config.validate()
        except KeyspaceConfigError as error:
            raise ApiError(400, "invalid-argument", str(error)) from None
        outcome = await call(CreateKeyspace(config), "create_keyspace")
        _raise_for(outcome)
        if not outcome.value:
            response.status_code = 200
        return {"created": bool(outcome.value), "keyspace": config.to_dict()}

    @app.get("/v1/keyspaces/{keyspace}/keys/{key:path}", summary="Read a key")
    async def get_key(
        keyspace: str,
        key: str,
        encoding: Encoding = Query("utf-8"),
        consistency: Consistency = Query(
            "linearizable",
            description="replicated keyspaces: linearizable (the leader), eventual (any"
            " replica), session (a replica at or past `after`), bounded (a replica at most"
            " `max_lag_ms` behind)",
        ),
        after: str | None = Query(
            None, description="session token EPOCH.SEQUENCE (implies consistency=session)"
        ),
        max_lag_ms: int | None = Query(None, ge=0, description="implies consistency=bounded"),
    ) -> dict[str, Any]:
        key_bytes = _decode(key, encoding, "key")
        min_position = _position(after)
        chosen = str(consistency)
        if chosen == "linearizable" and min_position is not None:
            chosen = "session"
        elif chosen == "linearizable" and max_lag_ms is not None:
            chosen = "bounded"
        outcome = await call(Get(keyspace, key_bytes, chosen, min_position, max_lag_ms), "get")
        _raise_for(outcome)
        if outcome.value is None:
            raise ApiError(404, "not-found", "no such key")
        value, used = _encode(outcome.value, encoding)  # type: ignore[arg-type]
        return {"key": key, "value": value, "encoding": used, **_replication(outcome)}

    @app.put("/v1/keyspaces/{keyspace}/keys/{key:path}", summary="Write a key")
    async def put_key(
        keyspace: str,
        key: str,
        body: PutBody,
        key_encoding: Encoding = Query("utf-8"),
        sync: Sync | None = Query(None, description="replicated keyspaces: this write's mode"),
    ) -> dict[str, Any]:
        if body.if_absent and body.if_present:
            raise ApiError(400, "invalid-argument", "if_absent and if_present exclude each other")
        condition = PutCondition.ALWAYS
        if body.if_absent:
            condition = PutCondition.IF_ABSENT
        elif body.if_present:
            condition = PutCondition.IF_PRESENT
        expire_at_ms = None
        if body.expire_ms is not None:
            expire_at_ms = time.time_ns() // 1_000_000 + body.expire_ms
            if expire_at_ms >= 2**63:  # stored as a signed 64-bit integer, as in Redis
                raise ApiError(400, "invalid-argument", "expire_ms is too large")
        operation = Put(
            keyspace,
            _decode(key, key_encoding, "key"),
            _decode(body.value, body.encoding, "value"),
            condition,
            expire_at_ms,
            sync=None if sync is None else str(sync),
        )
        outcome = await call(operation, "set")
        _raise_for(outcome)
        return {"written": bool(outcome.value), **_replication(outcome)}

    @app.delete("/v1/keyspaces/{keyspace}/keys/{key:path}", summary="Delete a key")
    async def delete_key(
        keyspace: str,
        key: str,
        key_encoding: Encoding = Query("utf-8"),
        sync: Sync | None = Query(None, description="replicated keyspaces: this write's mode"),
    ) -> dict[str, Any]:
        mode = None if sync is None else str(sync)
        outcome = await call(Delete(keyspace, _decode(key, key_encoding, "key"), mode), "del")
        _raise_for(outcome)
        return {"deleted": bool(outcome.value), **_replication(outcome)}

    @app.get("/v1/keyspaces/{keyspace}/scan", summary="Scan keys, partition by partition")
    async def scan(
        keyspace: str,
        limit: int = Query(100, ge=1, le=10_000),
        cursor: str | None = Query(None, description="From the previous page's next_cursor."),
        encoding: Encoding = Query("utf-8"),
    ) -> dict[str, Any]:
        placement = runtime.node.partition_map.keyspaces.get(keyspace)
        if placement is None:
            raise ApiError(404, "unknown-keyspace", f"unknown keyspace '{keyspace}'")
        # The cursor holds a position in the keyspace's sorted partition ids.
        partition_ids = placement.partition_ids
        partition, start = _decode_cursor(cursor) if cursor else (0, b"")
        items: list[dict[str, str]] = []
        next_cursor: str | None = None
        while partition < len(partition_ids) and len(items) < limit:
            wanted = limit - len(items)
            scan_page = ScanPartition(keyspace, partition_ids[partition], start, wanted)
            outcome = await call(scan_page, "scan")
            _raise_for(outcome)
            page = outcome.value
            assert isinstance(page, ScanPage)
            for item_key, item_value in page.items:
                key_text, key_used = _encode(item_key, encoding)
                value_text, value_used = _encode(item_value, encoding)
                items.append(
                    {
                        "key": key_text,
                        "value": value_text,
                        "key_encoding": key_used,
                        "value_encoding": value_used,
                    }
                )
            if page.next_start is not None:
                start = page.next_start
            else:
                partition, start = partition + 1, b""
        if partition < len(partition_ids):
            next_cursor = _encode_cursor(partition, start)
        return {"items": items, "next_cursor": next_cursor}

    @app.get("/v1/keyspaces/{keyspace}/range", summary="Keys of [start, end) in key order")
    async def key_range(
        keyspace: str,
        start: str = Query("", description="First key of the range (inclusive)."),
        end: str | None = Query(None, description="End of the range (exclusive); none: no end."),
        limit: int = Query(100, ge=1, le=10_000),
        after: str | None = Query(None, description="The previous page's `next` token."),
        keys_only: bool = Query(False),
        encoding: Encoding = Query("utf-8", description="Of start and end, and of the items."),
    ) -> dict[str, Any]:
        """Across every partition, in key order: key-range layouts are walked range by
        range, hash layouts asked all at once and merged (one partition when start and
        end share a hash tag). `partition_requests` is what the page cost."""
        start_bytes = _decode(start, encoding, "start")
        end_bytes = _decode(end, encoding, "end") if end else None
        limit_max = runtime.settings.limits.max_scan_limit
        try:
            position = page_start(start_bytes, end_bytes, limit, limit_max, after)
        except RangeScanError as error:
            raise ApiError(400, "invalid-argument", str(error)) from None
        if position is None:
            return {"items": [], "next": None, "partition_requests": 0}
        started_ns = time.perf_counter_ns()
        outcome = await range_scan_page(
            runtime.call,
            runtime.node.partition_map,
            keyspace,
            position,
            end_bytes,
            limit,
            keys_only,
            limit_max,
        )
        runtime.metrics.record("range", time.perf_counter_ns() - started_ns, not outcome.ok)
        _raise_for(outcome)
        page = outcome.value
        assert isinstance(page, RangePage)
        return {
            "items": [_range_item(key, value, encoding, keys_only) for key, value in page.items],
            "next": None if page.resume is None else encode_token(page.resume),
            "partition_requests": page.partition_requests,
        }

    @app.get("/v1/load", summary="This node's load: hottest keys and requests per partition")
    async def load(
        limit: int = Query(10, ge=1, le=100),
        encoding: Encoding = Query("utf-8"),
    ) -> dict[str, Any]:
        tracker = runtime.node.load
        current_ms = now_ms()
        hot_keys = []
        for hot_key in tracker.hottest(current_ms, limit):
            key_text, key_encoding = _encode(hot_key.key, encoding)
            hot_keys.append(
                {
                    "keyspace": hot_key.keyspace,
                    "key": key_text,
                    "encoding": key_encoding,
                    "requests_per_second": round(hot_key.requests_per_second, 1),
                    "error_per_second": round(hot_key.error_per_second, 1),
                }
            )
        partitions = [
            {
                "keyspace": entry.keyspace,
                "partition": entry.partition,
                "requests_total": entry.requests_total,
                "requests_per_second": round(entry.requests_per_second, 1),
            }
            for entry in tracker.partitions(current_ms)
        ]
        return {
            "node": runtime.settings.node_id,
            "window_ms": tracker.window_ms,
            "sample_every": tracker.sample_every,
            "hot_keys": hot_keys,
            "partitions": partitions,
        }

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _position(token: str | None) -> tuple[int, int] | None:
    """A session token `EPOCH.SEQUENCE` as a log position."""
    if token is None:
        return None
    epoch, separator, sequence = token.partition(".")
    if not separator or not epoch.isdigit() or not sequence.isdigit():
        raise ApiError(400, "invalid-argument", "after must be EPOCH.SEQUENCE, e.g. 2.1045")
    return int(epoch), int(sequence)


def scan_all(storage: Any, keyspace: str, partition: int) -> list[tuple[bytes, bytes]]:
    """Every stored record of one partition, a page at a time."""
    rows: list[tuple[bytes, bytes]] = []
    start = b""
    while True:
        page = storage.scan(keyspace, partition, start, None, 1024)
        rows += page
        if len(page) < 1024:
            return rows
        start = page[-1][0] + b"\x00"
