"""GroupCommit's cached state always matches what it summarises.

`pending` is kept as a plain attribute (read once per fast reply) and `get` skips the
overlay while it is empty; both must follow every change of the overlay and of the
applied and durable sequences, including groups that fail to apply or to sync."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.lmdb_engine import LmdbStorage


class _FlakyStorage:
    """LMDB storage whose `apply` fails on the key b"poison" and `sync` on request."""

    def __init__(self, path: Path) -> None:
        self.inner = LmdbStorage(str(path))
        self.fail_sync = False

    def apply(self, writes: Sequence[Write]) -> None:
        if any(write.key == b"poison" for write in writes):
            raise StorageError("simulated: the storage transaction failed")
        self.inner.apply(writes)

    def sync(self) -> None:
        if self.fail_sync:
            raise OSError("simulated: fsync failed")
        self.inner.sync()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _check(commit: GroupCommit) -> None:
    expected = bool(commit._overlay) or commit.durable_sequence < commit._applied_sequence
    assert commit.pending is expected


@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.NO])
@pytest.mark.parametrize("sync_in_thread", [False, True])
def test_pending_and_reads_follow_every_change(
    tmp_path: Path, policy: FsyncPolicy, sync_in_thread: bool
) -> None:
    storage = _FlakyStorage(tmp_path / "lmdb")

    async def settle(commit: GroupCommit) -> None:
        for _ in range(20):
            await asyncio.sleep(0.005)
            _check(commit)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        commit = GroupCommit(storage, policy, loop, sync_in_thread)  # type: ignore[arg-type]
        _check(commit)
        assert commit.get("ks", 0, b"a") is None
        commit.add((Write("ks", 0, b"a", b"1"),))
        _check(commit)
        assert commit.get("ks", 0, b"a") == b"1"  # from the overlay, before the commit
        await settle(commit)
        assert not commit.pending
        assert commit.get("ks", 0, b"a") == b"1"  # from storage
        commit.add((Write("ks", 0, b"a", b"2"), Write("ks", 0, b"poison", b"x")))
        assert commit.get("ks", 0, b"a") == b"2"
        await settle(commit)
        assert commit.get("ks", 0, b"a") == b"1"  # the failed group left nothing behind
        commit.add((Write("ks", 0, b"a", b"3"),))
        await settle(commit)
        assert commit.get("ks", 0, b"a") == b"3"
        storage.fail_sync = True
        commit.add((Write("ks", 0, b"b", b"4"),))
        await settle(commit)
        if policy is FsyncPolicy.ALWAYS:
            assert commit.failed and commit.pending  # never durable: nothing released

    try:
        asyncio.run(scenario())
    finally:
        storage.inner.close()


@pytest.mark.parametrize("sync_in_thread", [False, True])
def test_fsync_time_is_counted_with_the_fsyncs(tmp_path: Path, sync_in_thread: bool) -> None:
    """`sync_seconds` (exported as quorumdb_fsync_seconds) grows with each fsync."""
    storage = _FlakyStorage(tmp_path / "lmdb")

    async def scenario() -> None:
        commit = GroupCommit(
            storage,  # type: ignore[arg-type]
            FsyncPolicy.ALWAYS,
            asyncio.get_running_loop(),
            sync_in_thread,
        )
        assert (commit.sync_count, commit.sync_seconds) == (0, 0.0)
        commit.add((Write("ks", 0, b"k", b"v"),))
        for _ in range(100):
            await asyncio.sleep(0.005)
            if commit.sync_count:
                break
        assert commit.sync_count == 1 and commit.sync_seconds > 0.0

    asyncio.run(scenario())
    storage.inner.close()
