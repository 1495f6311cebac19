"""What the core asks its driver to do, carried out in order: persist, then send and reply.

A driver must make every `Persist` durable before releasing any `Send` or `Reply`
issued after it, in this batch or a later one (persist-before-send): the core reads
writes that are applied but not yet synced, so a later reply may reveal them. Drivers
may merge the persists of many batches into one transaction and one sync (group commit).

Effects are named tuples: immutable like frozen dataclasses, and several times cheaper to
build, which matters as every request makes one or more.
"""

from __future__ import annotations

from typing import NamedTuple

from quorumdb.core.messages import Message, Outcome
from quorumdb.storage.interface import Write


class Persist(NamedTuple):
    writes: tuple[Write, ...]


class Send(NamedTuple):
    destination: str
    message: Message


class Reply(NamedTuple):
    request_id: int
    outcome: Outcome


Effect = Persist | Send | Reply
