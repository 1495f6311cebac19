"""What the HTTP route modules share: the error they raise (answered as
`{"error": code, "message": ...}` with its status) and how bytes travel in JSON."""

from __future__ import annotations

import base64
from typing import Any, Literal

from quorumdb.core.messages import Outcome

Encoding = Literal["utf-8", "base64"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def encode_bytes(data: bytes, encoding: Encoding) -> tuple[str, str]:
    """(text, encoding used): UTF-8 when asked and possible, else base64."""
    if encoding == "utf-8":
        try:
            return data.decode(), "utf-8"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), "base64"


def replication_fields(outcome: Outcome) -> dict[str, Any]:
    """What a replicated keyspace's answer got: followers holding it (writes and leader
    reads), and its log position, also as a session token for `after`."""
    document: dict[str, Any] = {}
    if outcome.acks is not None:
        document["acks"] = outcome.acks
    if outcome.position is not None:
        document["position"] = list(outcome.position)
        document["token"] = f"{outcome.position[0]}.{outcome.position[1]}"
    return document
