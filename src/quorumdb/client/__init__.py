"""Python clients for quorumdb: `Client` (blocking) and `AsyncClient` (asyncio)."""

from quorumdb.client.async_client import AsyncClient
from quorumdb.client.sync_client import Client

__all__ = ["AsyncClient", "Client"]
