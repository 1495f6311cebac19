"""quorumdb: a distributed key-value database with selectable replication and partitioning modes."""

__version__ = "0.1.0"
