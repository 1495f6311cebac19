"""Lost+found entries named, listed page by page and resolved: the pure helpers of
`core/replication/lost_found.py` and the node's local ResolveLostWrite operation."""

from __future__ import annotations

import random

import pytest

from quorumdb.core.effects import Persist, Reply
from quorumdb.core.messages import Put, ResolveLostWrite
from quorumdb.core.records import encode_record
from quorumdb.core.replication import lost_found
from quorumdb.core.replication.lost_found import (
    KEYSPACE,
    LIST_LIMIT_MAX,
    PARTITION,
    RESOLUTIONS_PARTITION,
    LostWrite,
    LostWriteIdError,
    Resolution,
    list_entries,
    lost_write_id,
    parse_lost_write_id,
    pending_count,
)
from test_core_node import Cluster, DictStorage


def lost(sequence: int, index: int = 0, keyspace: str = "orders") -> LostWrite:
    record = encode_record(b"v%d" % sequence, 5_000 if sequence % 3 == 0 else None)
    if sequence % 4 == 0:
        record = None  # a lost delete
    return LostWrite(keyspace, sequence % 5, 2, sequence, index, b"k%d" % sequence, record)


def filed(*writes: LostWrite) -> DictStorage:
    storage = DictStorage()
    for write in writes:
        storage.apply(write.writes())
    return storage


def test_an_id_names_the_node_and_the_entry_and_round_trips() -> None:
    write = lost(7, index=3, keyspace="a.b-c_d")
    text = lost_write_id("node-1", write.storage_key)
    assert text == "node-1:" + write.storage_key.hex()
    assert parse_lost_write_id(text) == ("node-1", write.storage_key)
    assert parse_lost_write_id("a:b:" + write.storage_key.hex()) == ("a:b", write.storage_key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no-colon",
        ":" + lost(1).storage_key.hex(),  # no node
        "node0:",  # no key
        "node0:xyz",  # not hex
        "node0:abc",  # odd length
        "node0:" + b"orders".hex(),  # no separator, no header
        "node0:" + (b"orders\x00" + b"\x00" * 19).hex(),  # a short header
        "node0:" + lost(1).storage_key[6:].hex(),  # no keyspace name
        "node0:" + "00" * 400,  # too long
    ],
)
def test_malformed_ids_are_refused_with_the_declared_error(text: str) -> None:
    with pytest.raises(LostWriteIdError):
        parse_lost_write_id(text)


def test_entries_decode_their_value_expiry_and_deletes() -> None:
    storage = filed(lost(3), lost(4), lost(5))
    entries = {entry.lost.sequence: entry for entry in list_entries(storage, None, 10).entries}
    assert entries[3].lost.value == (b"v3", 5_000)
    assert entries[4].lost.value is None and entries[4].lost.record is None
    assert entries[5].lost.value == (b"v5", None)
    assert all(entry.resolution is None for entry in entries.values())


@pytest.mark.parametrize("seed", range(20))
def test_pages_list_every_entry_once_in_key_order(seed: int) -> None:
    rng = random.Random(seed)
    writes = [lost(rng.randrange(10_000), rng.randrange(3)) for _ in range(rng.randrange(40))]
    storage = filed(*writes)
    expected = sorted({write.storage_key: write for write in writes}.items())
    limit = rng.randint(1, 7)
    listed = []
    after = None
    for _ in range(100):  # bounded: at most 40 entries
        page = list_entries(storage, after, limit)
        assert len(page.entries) <= limit
        listed += [(entry.storage_key, entry.lost) for entry in page.entries]
        if page.next_after is None:
            break
        after = page.next_after
    assert listed == expected, f"seed {seed}"


def test_the_page_size_is_bounded() -> None:
    storage = filed(lost(1))
    for limit in (0, -1, LIST_LIMIT_MAX + 1):
        with pytest.raises(ValueError):
            list_entries(storage, None, limit)
    assert len(list_entries(storage, None, LIST_LIMIT_MAX).entries) == 1


def test_filing_an_entry_again_clears_an_old_resolution() -> None:
    write = lost(1)
    storage = filed(write)
    storage.apply((lost_found.resolve(storage, write.storage_key, Resolution.REPLAYED),))
    assert pending_count(storage) == 0
    storage.apply(write.writes())
    assert pending_count(storage) == 1


def node_and_storage() -> tuple[Cluster, DictStorage]:
    cluster = Cluster(count=1)
    cluster.settle()
    return cluster, cluster.storages["node0"]


def test_the_node_records_a_resolution_once() -> None:
    cluster, storage = node_and_storage()
    first, second = lost(1), lost(2)
    storage.apply(first.writes() + second.writes())
    assert pending_count(storage) == 2
    replayed = cluster.request("node0", ResolveLostWrite(first.storage_key, Resolution.REPLAYED))
    assert replayed.ok and replayed.value is True
    again = cluster.request("node0", ResolveLostWrite(first.storage_key, Resolution.DISCARDED))
    assert again.ok and again.value is False and again.message == "already replayed"
    discarded = cluster.request("node0", ResolveLostWrite(second.storage_key, Resolution.DISCARDED))
    assert discarded.value is True
    resolutions = [entry.resolution for entry in list_entries(storage, None, 10).entries]
    assert resolutions == [Resolution.REPLAYED, Resolution.DISCARDED]
    assert pending_count(storage) == 0
    assert storage.count(KEYSPACE, PARTITION) == 2  # entries stay, for audit


def test_resolving_an_unknown_entry_writes_nothing() -> None:
    cluster, storage = node_and_storage()
    node = cluster.nodes["node0"]
    effects = node.on_client_request(
        cluster.now_ms, 9, ResolveLostWrite(lost(1).storage_key, Resolution.REPLAYED)
    )
    assert not any(isinstance(effect, Persist) for effect in effects)
    (reply,) = effects
    assert isinstance(reply, Reply) and reply.outcome.value is None
    assert reply.outcome.message == "no such lost+found entry"
    assert storage.count(KEYSPACE, RESOLUTIONS_PARTITION) == 0
    assert cluster.request("node0", Put("default", b"k", b"v")).ok  # still serving
