"""HTTP routes that change the cluster: members joining and leaving, weights, rebalancing,
salted keys. Each is one metadata command, run by the controller leader (any node
forwards it) and answered once every node has applied it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from quorumdb.core.cluster_metadata import SALT_WAYS_MAX, command
from quorumdb.core.messages import ChangeMetadata, Operation, Outcome
from quorumdb.runtime.node_runtime import NodeRuntime

Call = Callable[[Operation, str], Awaitable[Outcome]]
RaiseFor = Callable[[Outcome], None]


class MemberBody(BaseModel):
    node_id: str = Field(min_length=1, max_length=64)
    host: str
    peer_port: int = Field(gt=0, lt=65536)
    resp_port: int = Field(gt=0, lt=65536)
    http_port: int = Field(gt=0, lt=65536)
    weight: int = Field(1, ge=1, le=1000)


class WeightBody(BaseModel):
    weight: int = Field(ge=1, le=1000)


class RebalanceSettingsBody(BaseModel):
    mode: Literal["manual", "automatic"] | None = None
    throttle_bytes_per_second: int | None = Field(None, ge=1024)


class SaltBody(BaseModel):
    key: str = Field(min_length=1)
    ways: int = Field(
        ge=0, le=SALT_WAYS_MAX, description="Sub-keys to spread writes over; 0 switches it off."
    )


class MoveReplicaBody(BaseModel):
    source: str = Field(min_length=1, description="The follower to replace.")
    target: str = Field(min_length=1, description="The active member to take its place.")


class MetadataRefused(Exception):
    """The controller applied the command and refused it (the metadata is unchanged)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def add_admin_routes(app: FastAPI, runtime: NodeRuntime, call: Call, raise_for: RaiseFor) -> None:
    async def change(proposal: bytes) -> dict[str, Any]:
        outcome = await call(ChangeMetadata(proposal), "change_metadata")
        raise_for(outcome)
        assert isinstance(outcome.value, bytes)
        result: dict[str, Any] = json.loads(outcome.value)
        if not result["ok"]:
            raise MetadataRefused(str(result["error"]))
        return result

    def founders() -> list[dict[str, object]]:
        return [member.to_dict() for member in runtime.node.members]

    @app.post("/v1/members", summary="Add a member (what `quorumdb node --join` calls)")
    async def add_member(body: MemberBody) -> dict[str, Any]:
        member = body.model_dump()
        await change(command("add_member", member={**member, "state": "active"}))
        current = runtime.node.partition_map.members
        return {
            "founding_members": founders(),
            "members": [each.to_dict() for each in current],
        }

    @app.put("/v1/members/{node_id}/weight", summary="Change a member's weight")
    async def set_weight(node_id: str, body: WeightBody) -> dict[str, Any]:
        return await change(command("set_weight", node_id=node_id, weight=body.weight))

    @app.post(
        "/v1/members/{node_id}/decommission",
        summary="Move a member's data away; it is marked left once it owns nothing",
    )
    async def decommission(node_id: str) -> dict[str, Any]:
        return await change(command("set_member_state", node_id=node_id, state="leaving"))

    @app.get("/v1/rebalance", summary="The current plan, its transfers and their progress")
    async def rebalance_status() -> dict[str, Any]:
        metadata = runtime.node.controller.metadata
        plan = metadata.to_dict()["plan"]
        return {
            "mode": metadata.rebalance_mode,
            "throttle_bytes_per_second": metadata.throttle_bytes_per_second,
            "plan": plan,
            "this_node": runtime.node.rebalancer.status(),
        }

    @app.put("/v1/rebalance", summary="Rebalance mode (manual or automatic) and throttle")
    async def rebalance_settings(body: RebalanceSettingsBody) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if body.mode is not None:
            result = await change(command("set_rebalance_mode", mode=body.mode))
        if body.throttle_bytes_per_second is not None:
            rate = body.throttle_bytes_per_second
            result = await change(command("set_throttle", bytes_per_second=rate))
        return result

    @app.post(
        "/v1/rebalance/{action}",
        summary="approve, pause, resume or cancel the current plan",
    )
    async def rebalance_action(
        action: Literal["approve", "pause", "resume", "cancel"],
    ) -> dict[str, Any]:
        plan = runtime.node.controller.metadata.plan
        if plan is None:
            raise MetadataRefused("there is no plan (see GET /v1/rebalance)")
        return await change(command("plan_step", plan_id=plan.plan_id, action=action))

    @app.post(
        "/v1/keyspaces/{keyspace}/partitions/{partition}/move-replica",
        summary="Replace a follower of a replicated partition by another member",
    )
    async def move_replica(keyspace: str, partition: int, body: MoveReplicaBody) -> dict[str, Any]:
        record = runtime.node.controller.metadata.keyspaces.get(keyspace)
        if record is None or str(partition) not in record.replica_sets:
            raise MetadataRefused(f"'{keyspace}' has no replicated partition {partition}")
        epoch = record.epochs.get(str(partition), 1)
        return await change(
            command(
                "move_replica",
                keyspace=keyspace,
                partition=partition,
                expected_epoch=epoch,
                remove=body.source,
                add=body.target,
            )
        )

    @app.post("/v1/keyspaces/{keyspace}/salted-keys", summary="Salt a hot counter key")
    async def salt_key(keyspace: str, body: SaltBody) -> dict[str, Any]:
        if body.ways == 1:  # refused here too: a definite answer without the controller
            raise MetadataRefused(f"a salted key spreads over 2 to {SALT_WAYS_MAX} sub-keys")
        key_hex = body.key.encode().hex()
        return await change(command("salt_key", keyspace=keyspace, key_hex=key_hex, ways=body.ways))
