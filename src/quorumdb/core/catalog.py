"""The keyspace catalog: which keyspaces exist, versioned, stored on the catalog holder.

Until the Raft controller (issue 3) exists, the lowest node id holds the catalog
and the others pull it; the `default` keyspace exists everywhere from the start.
"""

from __future__ import annotations

import json

from quorumdb.core.keyspace import DEFAULT_KEYSPACE, KeyspaceConfig
from quorumdb.storage.interface import StorageReader, Write

CATALOG_KEYSPACE = "_catalog"
CATALOG_PARTITION = 0
CATALOG_KEY = b"keyspaces"
INITIAL_VERSION = 1


def initial_catalog() -> tuple[int, tuple[KeyspaceConfig, ...]]:
    return INITIAL_VERSION, (KeyspaceConfig(DEFAULT_KEYSPACE),)


def load_catalog(storage: StorageReader) -> tuple[int, tuple[KeyspaceConfig, ...]]:
    raw = storage.get(CATALOG_KEYSPACE, CATALOG_PARTITION, CATALOG_KEY)
    if raw is None:
        return initial_catalog()
    document = json.loads(raw)
    configs = tuple(KeyspaceConfig.from_dict(item) for item in document["keyspaces"])
    return int(document["version"]), configs


def catalog_write(version: int, configs: tuple[KeyspaceConfig, ...]) -> Write:
    document = {"version": version, "keyspaces": [config.to_dict() for config in configs]}
    encoded = json.dumps(document, sort_keys=True).encode()
    return Write(CATALOG_KEYSPACE, CATALOG_PARTITION, CATALOG_KEY, encoded)
