"""The lost+found HTTP routes over real lost writes: an `async` leader's acknowledged
writes (two puts and a delete) are undone into lost+found when it comes back after a
failover (the in-process cluster of tests/test_replication_node.py), then listed,
replayed through the new leader, refused a second time, and discarded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from quorumdb.api.http_app import _raise_for
from quorumdb.api.http_common import ApiError
from quorumdb.api.lost_found_routes import add_lost_found_routes
from quorumdb.core.messages import Delete, Get, Operation, Outcome, Put
from quorumdb.core.replication.lost_found import (
    KEYSPACE,
    PARTITION,
    RESOLUTIONS_PARTITION,
    pending_count,
)
from quorumdb.core.replication.messages import Replicate
from test_replication_node import (
    FaultyCluster,
    create,
    leader_of,
    replicated,
    stored,
    tick_until,
)


class ClusterRuntime:
    """What the lost+found routes use of a NodeRuntime, over one node of the cluster."""

    def __init__(self, cluster: FaultyCluster, node_id: str) -> None:
        self.cluster = cluster
        self.settings = SimpleNamespace(node_id=node_id)
        self.calls: list[Operation] = []

    @property
    def node(self) -> Any:
        return self.cluster.nodes[self.settings.node_id]

    async def call(self, operation: Operation, name: str) -> Outcome:
        self.calls.append(operation)
        return self.cluster.request(self.settings.node_id, operation)


def lost_found_app(runtime: ClusterRuntime) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.code, "message": error.message}, error.status)

    add_lost_found_routes(app, runtime, runtime.call, _raise_for)  # type: ignore[arg-type]
    return app


def lose_three_writes(seed: int) -> tuple[FaultyCluster, str, str, list[bytes]]:
    """Keys a, b, c led by the victim: a put, b deleted and c put while its replication
    stream is cut; then it dies, is failed over and comes back as a follower."""
    cluster = FaultyCluster(seed=seed)
    survivor = cluster.settle()
    create(cluster, replicated("async"))
    victim = next(n for n in ("node0", "node1", "node2") if n != survivor)
    keys = [
        b"k%d" % index
        for index in range(300)
        if leader_of(cluster, survivor, b"k%d" % index)[1] == victim
    ][:3]
    for key in keys:
        assert cluster.request(survivor, Put("orders", key, b"replicated")).error is None
    cluster.drop = lambda source, target, message: (
        source == victim and isinstance(message, Replicate)
    )
    a, b, c = keys
    assert cluster.request(survivor, Put("orders", a, b"lost-a")).acks == 0
    assert cluster.request(survivor, Delete("orders", b)).acks == 0
    assert cluster.request(survivor, Put("orders", c, b"lost-c")).acks == 0
    cluster.kill(victim)
    cluster.drop = lambda source, target, message: False
    tick_until(cluster, lambda: leader_of(cluster, survivor, a)[1] != victim, 30.0)
    cluster.revive(victim)
    tick_until(
        cluster, lambda: all(stored(cluster, victim, k) == b"replicated" for k in keys), 20.0
    )
    return cluster, victim, survivor, keys


def test_lost_writes_are_listed_replayed_once_and_discarded() -> None:
    seed = 4
    print(f"seed {seed}: replay with pytest tests/test_lost_found_api.py")
    cluster, victim, survivor, (a, b, c) = lose_three_writes(seed)
    runtime = ClusterRuntime(cluster, victim)
    storage = cluster.storages[victim]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=lost_found_app(runtime))
        other = httpx.ASGITransport(app=lost_found_app(ClusterRuntime(cluster, survivor)))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://victim") as client,
            httpx.AsyncClient(transport=other, base_url="http://survivor") as elsewhere,
        ):
            listing = (await client.get("/v1/lostfound")).json()
            assert listing["node"] == victim and listing["pending"] == 3
            assert listing["next"] is None
            by_key = {entry["key"]: entry for entry in listing["entries"]}
            assert set(by_key) == {a.decode(), b.decode(), c.decode()}
            entry_a, entry_b, entry_c = (by_key[k.decode()] for k in (a, b, c))
            assert entry_a["id"].startswith(f"{victim}:")
            assert entry_a["keyspace"] == "orders" and entry_a["epoch"] == 1
            assert (entry_a["value"], entry_a["deleted"], entry_a["replayed"]) == (
                "lost-a",
                False,
                False,
            )
            assert entry_b["deleted"] is True and entry_b["value"] is None
            paged = (await client.get("/v1/lostfound", params={"limit": 2})).json()
            rest = (
                await client.get("/v1/lostfound", params={"limit": 2, "after": paged["next"]})
            ).json()
            assert [e["id"] for e in paged["entries"] + rest["entries"]] == [
                e["id"] for e in listing["entries"]
            ]
            assert (await client.get(f"/v1/lostfound/{entry_c['id']}")).json() == entry_c

            elsewhere_reply = await elsewhere.post(f"/v1/lostfound/{entry_a['id']}/replay")
            assert elsewhere_reply.status_code == 421
            assert f"kept on node {victim}" in elsewhere_reply.json()["message"]

            replayed = await client.post(f"/v1/lostfound/{entry_a['id']}/replay")
            assert replayed.status_code == 200, replayed.text
            assert replayed.json()["replayed"] is True
            assert replayed.json()["operation"] == "put"
            assert cluster.request(survivor, Get("orders", a)).value == b"lost-a"
            again = await client.post(f"/v1/lostfound/{entry_a['id']}/replay")
            assert again.status_code == 409 and again.json()["error"] == "already-resolved"
            assert "replayed already" in again.json()["message"]

            deleted = await client.post(f"/v1/lostfound/{entry_b['id']}/replay")
            assert deleted.json()["operation"] == "delete"
            assert cluster.request(survivor, Get("orders", b)).value is None

            discarded = await client.delete(f"/v1/lostfound/{entry_c['id']}")
            assert discarded.json() == {"id": entry_c["id"], "discarded": True}
            assert (await client.delete(f"/v1/lostfound/{entry_c['id']}")).status_code == 409
            refused = await client.post(f"/v1/lostfound/{entry_c['id']}/replay")
            assert refused.status_code == 409 and "discarded already" in refused.text
            assert cluster.request(survivor, Get("orders", c)).value == b"replicated"

            final = (await client.get("/v1/lostfound")).json()
            assert final["pending"] == 0
            states = {e["key"]: (e["replayed"], e["discarded"]) for e in final["entries"]}
            assert states == {
                a.decode(): (True, False),
                b.decode(): (True, False),
                c.decode(): (False, True),
            }

    asyncio.run(scenario())
    tick_until(cluster, lambda: stored(cluster, victim, a) == b"lost-a", 5.0)  # replicated
    assert pending_count(storage) == 0


def test_malformed_and_unknown_ids_are_refused_and_write_nothing() -> None:
    cluster, victim, _, _ = lose_three_writes(4)
    runtime = ClusterRuntime(cluster, victim)
    storage = cluster.storages[victim]
    before = {location: dict(table) for location, table in storage.data.items()}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=lost_found_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://victim") as client:
            listing = (await client.get("/v1/lostfound")).json()
            real_id = listing["entries"][0]["id"]
            unknown_id = real_id[:-2] + ("00" if not real_id.endswith("00") else "01")
            for bad_id, status in (
                ("garbage", 400),
                (f"{victim}:zz", 400),
                (f"{victim}:" + b"orders".hex(), 400),
                (unknown_id, 404),
            ):
                for method, path in (
                    ("POST", f"/v1/lostfound/{bad_id}/replay"),
                    ("DELETE", f"/v1/lostfound/{bad_id}"),
                    ("GET", f"/v1/lostfound/{bad_id}"),
                ):
                    response = await client.request(method, path)
                    assert response.status_code == status, (method, path, response.text)
                    assert response.json()["message"]
            bad_cursor = await client.get("/v1/lostfound", params={"after": "not-hex"})
            assert bad_cursor.status_code == 400

    asyncio.run(scenario())
    assert runtime.calls == []  # nothing was written, not even through the core
    after = {location: dict(table) for location, table in storage.data.items()}
    assert after[(KEYSPACE, PARTITION)] == before[(KEYSPACE, PARTITION)]
    assert (KEYSPACE, RESOLUTIONS_PARTITION) not in after or not after[
        (KEYSPACE, RESOLUTIONS_PARTITION)
    ]
