"""The controller's metadata state machine: deterministic, versioned, refusing bad commands
without changing anything."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.cluster_metadata import ClusterMetadata, command


def member(node_id: str, port: int, **extra: object) -> dict[str, object]:
    return {
        "node_id": node_id,
        "host": "127.0.0.1",
        "peer_port": port + 200,
        "resp_port": port,
        "http_port": port + 100,
        **extra,
    }


def fixed(*owners: str) -> dict[str, object]:
    return {"strategy": "fixed", "owners": list(owners)}


def apply(metadata: ClusterMetadata, raw: bytes) -> dict[str, object]:
    result: dict[str, object] = json.loads(metadata.apply(0, raw))
    return result


def two_node_metadata() -> ClusterMetadata:
    metadata = ClusterMetadata()
    assert apply(metadata, command("add_member", member=member("node0", 7000)))["ok"]
    assert apply(metadata, command("add_member", member=member("node1", 7001)))["ok"]
    created = apply(
        metadata,
        command(
            "create_keyspace",
            config={"name": "ks", "partitioning": "fixed:2", "replication_factor": 1},
            layout=fixed("node0", "node1"),
            partitions=[0, 1],
        ),
    )
    assert created == {"ok": True, "version": 3, "created": True}
    return metadata


def test_members_keyspaces_and_versions() -> None:
    metadata = two_node_metadata()
    again = apply(metadata, command("add_member", member=member("node1", 7001)))
    assert again == {"ok": True, "version": 3, "changed": False}  # idempotent, no new version
    clash = apply(metadata, command("add_member", member=member("node1", 7005)))
    assert clash["ok"] is False and "another address" in str(clash["error"])
    stolen = apply(metadata, command("add_member", member=member("node9", 7001)))
    assert stolen["ok"] is False and "node1" in str(stolen["error"])
    assert apply(metadata, command("set_weight", node_id="node1", weight=3))["version"] == 4
    assert apply(metadata, command("set_weight", node_id="node1", weight=0))["ok"] is False
    assert apply(metadata, command("set_member_state", node_id="node0", state="leaving"))["ok"]
    assert metadata.active_members() == {"node1": 3}
    assert (
        apply(metadata, command("set_member_state", node_id="nodeX", state="left"))["ok"] is False
    )
    assert metadata.version == 5


def test_layout_changes_are_conditional_and_raise_epochs() -> None:
    metadata = two_node_metadata()
    moved = command(
        "set_layout",
        keyspace="ks",
        expected_layout_version=1,
        layout=fixed("node1", "node1"),
        changed=[0],
    )
    assert apply(metadata, moved)["layout_version"] == 2
    assert metadata.keyspaces["ks"].epochs == {"0": 2, "1": 1}
    stale = apply(metadata, moved)  # the same proposal again: computed for version 1
    assert stale["ok"] is False and "version 2" in str(stale["error"])
    assert metadata.keyspaces["ks"].layout == fixed("node1", "node1")


def test_manual_plan_waits_for_approval_then_switches_ownership_atomically() -> None:
    metadata = two_node_metadata()
    transfer = {
        "keyspace": "ks",
        "source_node": "node0",
        "source_partition": 0,
        "target_node": "node1",
        "target_partition": 0,
        "estimated_bytes": 1000,
    }
    plan = command(
        "propose_plan",
        reason="node0 leaves",
        target_layouts={"ks": fixed("node1", "node1")},
        based_on={"ks": 1},
        transfers=[transfer],
    )
    proposed = apply(metadata, plan)
    assert proposed["state"] == "proposed" and proposed["plan_id"] == 1
    early = command("transfer_progress", plan_id=1, transfer=0, state="done", copied_bytes=9)
    assert apply(metadata, early)["ok"] is False  # not approved yet: nothing moves
    assert apply(metadata, command("plan_step", plan_id=1, action="resume"))["ok"] is False
    assert apply(metadata, command("plan_step", plan_id=1, action="approve"))["state"] == "approved"
    copying = command("transfer_progress", plan_id=1, transfer=0, state="copying", copied_bytes=500)
    assert apply(metadata, copying)["state"] == "running"
    assert metadata.keyspaces["ks"].layout == fixed("node0", "node1")  # not yet
    assert apply(metadata, command("plan_step", plan_id=1, action="pause"))["state"] == "paused"
    assert apply(metadata, copying)["ok"] is False  # paused: progress reports refused
    assert apply(metadata, command("plan_step", plan_id=1, action="resume"))["state"] == "running"
    done = command("transfer_progress", plan_id=1, transfer=0, state="done", copied_bytes=1000)
    assert apply(metadata, done)["state"] == "done"
    record = metadata.keyspaces["ks"]
    assert record.layout == fixed("node1", "node1")
    assert record.layout_version == 2 and record.epochs == {"0": 2, "1": 1}
    assert apply(metadata, plan)["ok"] is False  # computed for layout version 1: refused


def test_automatic_mode_approves_plans_itself() -> None:
    metadata = two_node_metadata()
    assert apply(metadata, command("set_rebalance_mode", mode="automatic"))["ok"]
    proposed = apply(
        metadata,
        command("propose_plan", reason="x", target_layouts={}, based_on={"ks": 1}, transfers=[]),
    )
    assert proposed["state"] == "done"  # approved at once, and with nothing to copy, done
    assert apply(metadata, command("set_rebalance_mode", mode="sometimes"))["ok"] is False


def test_salted_keys_are_validated() -> None:
    metadata = two_node_metadata()
    key_hex = b"celebrity".hex()
    assert apply(metadata, command("salt_key", keyspace="ks", key_hex=key_hex, ways=8))["ok"]
    assert metadata.keyspaces["ks"].salted_keys == {key_hex: 8}
    for bad in (1, 65, True, "8"):
        refused = apply(metadata, command("salt_key", keyspace="ks", key_hex="00", ways=bad))
        assert refused["ok"] is False
    assert apply(metadata, command("salt_key", keyspace="ks", key_hex="zz", ways=2))["ok"] is False
    changing = apply(metadata, command("salt_key", keyspace="ks", key_hex=key_hex, ways=4))
    assert changing["ok"] is False and "unsalt" in str(changing["error"])
    assert apply(metadata, command("salt_key", keyspace="ks", key_hex=key_hex, ways=0))["ok"]
    assert metadata.keyspaces["ks"].salted_keys == {}


def test_keyspaces_and_layouts_every_node_could_not_load_are_refused() -> None:
    """A refused command changes nothing on any node; an accepted bad layout would stop
    every node from routing."""
    metadata = two_node_metadata()
    for config, layout in (
        ({"name": "bad name!", "partitioning": "fixed:2", "replication_factor": 1}, fixed("a")),
        ({"name": "ok", "partitioning": "fixed", "replication_factor": 1}, fixed("a")),
        ({"name": "ok", "partitioning": "spiral:3", "replication_factor": 1}, fixed("a")),
        ({"name": "ok", "partitioning": "fixed:2", "replication_factor": 1}, {"strategy": "x"}),
        ({"name": "ok", "partitioning": "fixed:2", "replication_factor": 1}, {"owners": 7}),
    ):
        refused = apply(metadata, command("create_keyspace", config=config, layout=layout))
        assert refused["ok"] is False, (config, layout)
    bad_layout = command(
        "set_layout",
        keyspace="ks",
        expected_layout_version=1,
        layout={"strategy": "fixed"},
        changed=[],
    )
    assert apply(metadata, bad_layout)["ok"] is False
    assert set(metadata.keyspaces) == {"ks"} and metadata.version == 3


_NAMES = st.sampled_from(["node0", "node1", "node2", "ks", "other"])
_COMMANDS = st.one_of(
    st.builds(lambda n, p: command("add_member", member=member(n, p)), _NAMES, st.integers(1, 3)),
    st.builds(
        lambda n, s: command("set_member_state", node_id=n, state=s),
        _NAMES,
        st.sampled_from(["active", "leaving", "left", "bogus"]),
    ),
    st.builds(lambda n, w: command("set_weight", node_id=n, weight=w), _NAMES, st.integers(-1, 5)),
    st.builds(
        lambda name: command("create_keyspace", config={"name": name}, layout={}, partitions=[0]),
        _NAMES,
    ),
    st.builds(
        lambda name, version: command(
            "set_layout", keyspace=name, expected_layout_version=version, layout={}, changed=[0]
        ),
        _NAMES,
        st.integers(0, 3),
    ),
    st.builds(
        lambda name, ways: command("salt_key", keyspace=name, key_hex="61", ways=ways),
        _NAMES,
        st.integers(0, 3),
    ),
    st.binary(max_size=20),  # garbage: refused, never a crash
    st.just(b'{"op": "set_weight"}'),
    st.just(b"[1, 2]"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_COMMANDS, max_size=30))
def test_any_command_sequence_is_deterministic_and_snapshots_round_trip(
    commands: list[bytes],
) -> None:
    first, second = ClusterMetadata(), ClusterMetadata()
    for index, raw in enumerate(commands):
        before = first.snapshot()
        result = json.loads(first.apply(index, raw))
        assert json.loads(second.apply(index, raw)) == result
        if not result["ok"]:
            assert first.snapshot() == before  # a refused command changes nothing
    assert first.snapshot() == second.snapshot()
    restored = ClusterMetadata()
    restored.restore(first.snapshot())
    assert restored.snapshot() == first.snapshot()
    assert restored.to_dict() == first.to_dict()


def test_a_replica_move_starts_as_a_learner_and_completes_in_a_new_epoch() -> None:
    import json as _json

    from quorumdb.core.cluster import founding_metadata, local_members
    from quorumdb.core.cluster_metadata import command as _command
    from quorumdb.core.keyspace import KeyspaceConfig as _Config

    metadata = founding_metadata(local_members(4, 7000))
    config = _Config("orders", "fixed:2", 3, "single-leader").canonical()
    layout = {"strategy": "fixed", "owners": ["node0", "node1"]}
    created = metadata.apply(
        1, _command("create_keyspace", config=config.to_dict(), layout=layout, partitions=[0, 1])
    )
    assert _json.loads(created)["ok"], created
    record = metadata.keyspaces["orders"]
    leader, follower = record.replica_sets["0"][0], record.replica_sets["0"][1]
    spare = next(
        n for n in ("node0", "node1", "node2", "node3") if n not in record.replica_sets["0"]
    )

    def apply(index: int, op: str, **arguments: object) -> dict[str, object]:
        result: dict[str, object] = _json.loads(metadata.apply(index, _command(op, **arguments)))
        return result

    moved = apply(2, "move_replica", keyspace="orders", partition=0, expected_epoch=1,
                  remove=follower, add=spare)  # fmt: skip
    assert moved["ok"], moved
    record = metadata.keyspaces["orders"]
    assert record.replica_sets["0"][1] == follower and record.epochs["0"] == 1  # not yet
    again = apply(3, "move_replica", keyspace="orders", partition=0, expected_epoch=1,
                  remove=follower, add=spare)  # fmt: skip
    assert not again["ok"] and "already under way" in str(again["error"])
    done = apply(4, "complete_move", keyspace="orders", partition=0, expected_epoch=1,
                 remove=follower, add=spare)  # fmt: skip
    assert done["ok"], done
    record = metadata.keyspaces["orders"]
    assert spare in record.replica_sets["0"] and follower not in record.replica_sets["0"]
    assert record.epochs["0"] == 2 and not record.pending_moves
    assert record.replica_sets["0"][0] == leader
