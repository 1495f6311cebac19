"""Both engines against a dict-of-dicts model, driven by Hypothesis state machines.

Keys come from a tiny alphabet so batches overwrite and delete each other's keys, and
a few large values force LMDB overflow pages and (from a 64 KiB map) map growth.
"""

from __future__ import annotations

import copy
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from quorumdb.storage.interface import Storage, Write
from quorumdb.storage.lmdb_engine import LmdbStorage
from quorumdb.storage.sim_disk import SimDisk

Location = tuple[str, int]
Model = dict[Location, dict[bytes, bytes]]

# ("alpha", 2) and ("alpha", 10) check that partitions sort as numbers, not as text.
locations = st.sampled_from([("alpha", 2), ("alpha", 10), ("beta", 0)])
keys = st.lists(st.sampled_from(b"\x00a\xff"), min_size=1, max_size=2).map(bytes)
values = st.one_of(
    st.binary(max_size=8),
    st.integers(0, 255).map(lambda byte: bytes([byte]) * 4500),
)
writes = st.builds(
    lambda location, key, value: Write(location[0], location[1], key, value),
    locations,
    keys,
    st.one_of(values, values, values, st.none()),  # one write in four is a delete
)
scan_ends = st.one_of(st.none(), keys)

STATE_MACHINE_SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)
UNBOUNDED_LIMIT = 1 << 30


def applied(model: Model, batch: list[Write]) -> Model:
    """The model after `batch`, leaving `model` untouched; empty partitions dropped."""
    result = copy.deepcopy(model)
    for write in batch:
        partition = result.setdefault((write.keyspace, write.partition), {})
        if write.value is None:
            partition.pop(write.key, None)
        else:
            partition[write.key] = write.value
    return {location: pairs for location, pairs in result.items() if pairs}


def contents(storage: Storage) -> Model:
    """Everything the engine holds, read back through its public API."""
    return {
        location: dict(storage.scan(location[0], location[1], b"", None, UNBOUNDED_LIMIT))
        for location in storage.partitions()
    }


class StorageModelMachine(RuleBasedStateMachine):
    """Rules every engine must satisfy; subclasses add their crash/reopen rules."""

    def __init__(self) -> None:
        super().__init__()
        self.storage: Storage = self.open_storage()
        self.model: Model = {}
        self.synced_model: Model = {}

    def open_storage(self) -> Storage:
        raise NotImplementedError

    @initialize(batch=st.lists(writes, min_size=5, max_size=30))
    def seed(self, batch: list[Write]) -> None:
        """Start from some data so that scans and limits have something to cut."""
        self.apply(batch)

    @rule(batch=st.lists(writes, max_size=12))
    def apply(self, batch: list[Write]) -> None:
        self.storage.apply(batch)
        self.model = applied(self.model, batch)

    @rule()
    def sync(self) -> None:
        self.storage.sync()
        self.synced_model = copy.deepcopy(self.model)

    @rule(location=locations, key=keys)
    def get(self, location: Location, key: bytes) -> None:
        expected = self.model.get(location, {}).get(key)
        assert self.storage.get(location[0], location[1], key) == expected

    @rule(
        location=locations,
        start=st.one_of(st.just(b""), keys),
        end=scan_ends,
        limit=st.integers(0, 4),
    )
    def scan(self, location: Location, start: bytes, end: bytes | None, limit: int) -> None:
        in_range = sorted(
            (key, value)
            for key, value in self.model.get(location, {}).items()
            if start <= key and (end is None or key < end)
        )
        assert self.storage.scan(location[0], location[1], start, end, limit) == in_range[:limit]

    @rule(location=locations)
    def count(self, location: Location) -> None:
        assert self.storage.count(*location) == len(self.model.get(location, {}))

    @invariant()
    def partitions_match(self) -> None:
        assert self.storage.partitions() == sorted(self.model)

    def teardown(self) -> None:
        self.storage.close()


class LmdbModelMachine(StorageModelMachine):
    """LmdbStorage from a 64 KiB map, closed and reopened on the same path."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="quorumdb-model-")
        super().__init__()
        # Every state since the last sync, oldest first: after a close without sync
        # the engine may hold any of them (batches are atomic and ordered), never a mix.
        self.states_since_sync: list[Model] = [{}]

    def open_storage(self) -> Storage:
        return LmdbStorage(self.directory, map_size_bytes=64 * 1024)

    @rule(batch=st.lists(writes, max_size=12))
    def apply(self, batch: list[Write]) -> None:
        super().apply(batch)
        self.states_since_sync.append(self.model)

    @rule()
    def sync(self) -> None:
        super().sync()
        self.states_since_sync = [self.model]

    @rule()
    def sync_close_and_reopen(self) -> None:
        self.storage.sync()
        self.storage.close()
        self.storage = self.open_storage()
        assert contents(self.storage) == self.model
        self.synced_model = self.model
        self.states_since_sync = [self.model]

    @rule()
    def close_without_sync_and_reopen(self) -> None:
        self.storage.close()
        self.storage = self.open_storage()
        recovered = contents(self.storage)
        assert recovered in self.states_since_sync
        self.model = recovered
        self.states_since_sync = [recovered]

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class SimDiskModelMachine(StorageModelMachine):
    """SimDisk, whose crash must drop exactly the unsynced writes."""

    def open_storage(self) -> Storage:
        return SimDisk()

    @rule()
    def crash(self) -> None:
        assert isinstance(self.storage, SimDisk)
        self.storage.crash()
        self.model = copy.deepcopy(self.synced_model)
        assert contents(self.storage) == self.model

    @rule()
    def close_and_continue(self) -> None:
        self.storage.close()
        self.model = copy.deepcopy(self.synced_model)
        assert contents(self.storage) == self.model


TestLmdbModel = LmdbModelMachine.TestCase
TestLmdbModel.settings = STATE_MACHINE_SETTINGS
TestSimDiskModel = SimDiskModelMachine.TestCase
TestSimDiskModel.settings = STATE_MACHINE_SETTINGS
