"""Data replication inside a partition; one module per concept (see ARCHITECTURE.md)."""
