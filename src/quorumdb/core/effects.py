"""What the core asks its driver to do, carried out in order: persist, then send and reply.

A driver must make every `Persist` durable before releasing any `Send` or `Reply`
issued after it, in this batch or a later one (persist-before-send): the core reads
writes that are applied but not yet synced, so a later reply may reveal them. Drivers
may merge the persists of many batches into one transaction and one sync (group commit).
"""

from __future__ import annotations

from dataclasses import dataclass

from quorumdb.core.messages import Message, Outcome
from quorumdb.storage.interface import Write


@dataclass(frozen=True, slots=True)
class Persist:
    writes: tuple[Write, ...]


@dataclass(frozen=True, slots=True)
class Send:
    destination: str
    message: Message


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: int
    outcome: Outcome


Effect = Persist | Send | Reply
