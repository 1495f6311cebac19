"""The read cache never serves a stale record and stays within its byte budget."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from quorumdb.core.records import encode_record
from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.runtime.read_cache import ReadCache
from quorumdb.storage.interface import Write
from quorumdb.storage.lmdb_engine import LmdbStorage


def test_hits_evictions_and_forgetting() -> None:
    cache = ReadCache(capacity_bytes=100, record_bytes_max=60)
    cache.put(("ks", 0, b"a"), b"\x00" + b"x" * 40)
    assert cache.get(("ks", 0, b"a")) == b"\x00" + b"x" * 40
    cache.put(("ks", 0, b"b"), b"\x00" + b"y" * 40)
    cache.put(("ks", 0, b"c"), b"\x00" + b"z" * 40)  # over budget: the oldest goes
    assert cache.get(("ks", 0, b"a")) is None
    assert cache.size_bytes <= 100 and len(cache) == 2
    cache.forget([Write("ks", 0, b"b", None)])
    assert cache.get(("ks", 0, b"b")) is None
    cache.put(("ks", 0, b"big"), b"\x00" + b"w" * 80)  # larger than one record may be
    cache.put(("ks", 0, b"ttl"), encode_record(b"v", expire_at_ms=5))  # has an expiry
    assert cache.get(("ks", 0, b"big")) is None and cache.get(("ks", 0, b"ttl")) is None
    assert cache.hit_count == 1


def test_group_commit_reads_match_a_plain_dictionary(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    chooser = random.Random(seed)
    replay = f"seed {seed}: set random.Random({seed}) in this test to replay"

    async def scenario() -> None:
        storage = LmdbStorage(str(tmp_path / "db"))
        commit = GroupCommit(storage, FsyncPolicy.NO, asyncio.get_running_loop(), cache_bytes=300)
        model: dict[bytes, bytes | None] = {}
        for step in range(2000):
            key = b"k%d" % chooser.randrange(12)
            action = chooser.random()
            if action < 0.35:
                value = None if chooser.random() < 0.2 else encode_record(b"v%d" % step)
                commit.add((Write("ks", 0, key, value),))
                model[key] = value
            elif action < 0.45:
                await asyncio.sleep(0)  # end of a turn: the group reaches storage
            else:
                assert commit.get("ks", 0, key) == model.get(key), replay
        assert commit.cache.hit_count > 0, replay
        assert commit.cache.size_bytes <= 300, replay
        storage.close()

    asyncio.run(scenario())
