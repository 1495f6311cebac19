"""Group commit releases replies only after the covering sync, inline or in a thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.storage.interface import Write
from quorumdb.storage.lmdb_engine import LmdbStorage


class CountingStorage(LmdbStorage):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.synced_writes: list[int] = []
        self.applied = 0

    def apply(self, writes):  # type: ignore[no-untyped-def]
        super().apply(writes)
        self.applied += len(writes)

    def sync(self) -> None:
        super().sync()
        self.synced_writes.append(self.applied)


@pytest.mark.parametrize("sync_in_thread", [False, True])
def test_replies_wait_for_the_sync_that_covers_their_write(
    tmp_path: Path, sync_in_thread: bool
) -> None:
    async def scenario() -> tuple[CountingStorage, list[tuple[str, int]]]:
        storage = CountingStorage(str(tmp_path / "db"))
        loop = asyncio.get_running_loop()
        commit = GroupCommit(storage, FsyncPolicy.ALWAYS, loop, sync_in_thread=sync_in_thread)
        released: list[tuple[str, int]] = []
        for index in range(3):  # three writes in one turn: one group, one sync
            commit.add((Write("ks", 0, b"k%d" % index, b"\x00v"),))
            commit.release_after_pending(
                lambda index=index: released.append((f"w{index}", len(storage.synced_writes)))
            )
        assert released == [] and commit.pending
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(released) == 3:
                break
        storage.close()
        return storage, released

    storage, released = asyncio.run(scenario())
    assert storage.synced_writes[:1] == [3]  # the first sync covered all three writes
    assert released == [("w0", 1), ("w1", 1), ("w2", 1)]  # each after exactly that sync


def _writes_per_sync(tmp_path: Path, collect_turns: int, turns_with_a_write: int) -> list[int]:
    """One write per loop turn for `turns_with_a_write` turns; the applied count at each sync."""

    async def scenario() -> list[int]:
        storage = CountingStorage(str(tmp_path / f"db{collect_turns}"))
        loop = asyncio.get_running_loop()
        commit = GroupCommit(storage, FsyncPolicy.ALWAYS, loop, collect_turns=collect_turns)
        for index in range(turns_with_a_write):
            commit.add((Write("ks", 0, b"k%d" % index, b"\x00v"),))
            await asyncio.sleep(0)  # the next write arrives in the next turn
        for _ in range(collect_turns + 2):
            await asyncio.sleep(0)
        assert not commit.pending
        storage.close()
        return storage.synced_writes

    return asyncio.run(scenario())


def test_a_group_collects_the_writes_of_the_next_turns_before_its_fsync(tmp_path: Path) -> None:
    # Without collecting, each turn's write gets its own group and fsync.
    assert _writes_per_sync(tmp_path, collect_turns=0, turns_with_a_write=3) == [1, 2, 3]
    # With it, writes arriving in the following turns join the waiting group.
    assert _writes_per_sync(tmp_path, collect_turns=4, turns_with_a_write=3) == [3]


def test_collecting_waits_at_most_collect_turns_turns(tmp_path: Path) -> None:
    # A write in every turn must not postpone the fsync forever: every group is synced
    # after at most 1 + collect_turns turns of writes.
    synced = _writes_per_sync(tmp_path, collect_turns=2, turns_with_a_write=30)
    assert synced[-1] == 30
    sizes = [after - before for before, after in zip([0] + synced, synced, strict=False)]
    assert max(sizes) <= 3, sizes
    assert len(synced) >= 10, synced
