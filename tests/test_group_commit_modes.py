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
