"""One transfer's two ends over a network that loses, duplicates and reorders: the target
ends with exactly the source's moving keys, whatever was written during the copy."""

from __future__ import annotations

import random

import pytest

from quorumdb.core.transfer import (
    REORDER_WINDOW_MESSAGES,
    IncomingTransfer,
    OutgoingTransfer,
    TransferData,
    TransferKey,
    TransferLimits,
)
from quorumdb.storage.interface import Write
from test_core_node import DictStorage

KEY = TransferKey(plan_id=1, transfer_index=0, attempt=1)


def moves(key: bytes) -> bool:
    return int(key.split(b":")[1]) % 3 == 0  # a third of the partition's keys move


def run(seed: int, loss: float, keys: int, writes_during: int, throttle: int) -> None:
    print(f"seed {seed}: replay with pytest 'tests/test_transfer.py::<this test>[{seed}]'")
    rng = random.Random(seed)
    source_storage, target_storage = DictStorage(), DictStorage()
    source_storage.apply(
        tuple(Write("ks", 5, f"k:{index}".encode(), b"v0") for index in range(keys))
    )
    limits = TransferLimits(chunk_keys=16, chunk_bytes=400, window_messages=4, retransmit_ms=50)
    source = OutgoingTransfer(KEY, "ks", 5, moves, throttle, limits, now_ms=0)
    target = IncomingTransfer(KEY, "ks", 9)
    in_flight: list[tuple[int, str, object]] = []  # (arrival ms, to, message)
    now_ms = 0
    written = 0

    def send(to: str, message: object) -> None:
        if rng.random() < loss:
            return
        copies = 2 if rng.random() < 0.05 else 1
        for _ in range(copies):
            in_flight.append((now_ms + rng.randint(1, 30), to, message))

    for _ in range(20_000):
        now_ms += 5
        if written < writes_during and rng.random() < 0.5:
            index = rng.randrange(keys + 20)
            record = None if rng.random() < 0.2 else f"v{now_ms}".encode()
            key = f"k:{index}".encode()
            source_storage.apply((Write("ks", 5, key, record),))
            source.on_write(key, record)
            written += 1
        if written >= writes_during and source.caught_up:
            source.seal()  # the node stops serving moving keys here: no more writes
        for message in source.on_tick(now_ms, source_storage):
            send("target", message)
        arrived = [entry for entry in in_flight if entry[0] <= now_ms]
        in_flight = [entry for entry in in_flight if entry[0] > now_ms]
        rng.shuffle(arrived)
        for _, to, message in arrived:
            if to == "target":
                assert isinstance(message, TransferData)
                persisted, ack = target.on_data(message)
                target_storage.apply(persisted)
                send("source", ack)
            else:
                source.on_ack(message.sequence)
        if target.complete and source.acknowledged_sealed:
            break
    else:
        pytest.fail(f"seed {seed}: the transfer did not finish")
    expected = {
        key: value for key, value in source_storage.data.get(("ks", 5), {}).items() if moves(key)
    }
    assert target_storage.data.get(("ks", 9), {}) == expected
    assert source.copied_bytes > 0 and target.received_bytes > 0


@pytest.mark.parametrize("seed", range(40))
def test_transfer_converges_under_loss_duplication_and_reordering(seed: int) -> None:
    run(seed, loss=0.2, keys=200, writes_during=150, throttle=50_000)


@pytest.mark.parametrize("seed", range(5))
def test_transfer_without_faults_or_writes(seed: int) -> None:
    run(seed, loss=0.0, keys=500, writes_during=0, throttle=10_000_000)


def test_the_throttle_bounds_the_snapshot_rate() -> None:
    storage = DictStorage()
    storage.apply(tuple(Write("ks", 0, b"k:%05d" % index, b"x" * 100) for index in range(3000)))
    limits = TransferLimits(chunk_keys=50, chunk_bytes=5_000, window_messages=1_000)
    source = OutgoingTransfer(KEY, "ks", 0, lambda key: True, 20_000, limits, now_ms=0)
    sent_bytes = 0
    for now_ms in range(0, 10_001, 10):
        for message in source.on_tick(now_ms, storage):
            sent_bytes += sum(len(key) + len(record or b"") for key, record in message.items)
            source.on_ack(message.sequence)
    # 10 s at 20 kB/s plus one burst: far below the 321 kB the partition holds.
    assert 190_000 <= sent_bytes <= 20_000 * 10 + 5_000 + 5_000


def test_pausing_stops_the_snapshot_but_not_live_writes() -> None:
    storage = DictStorage()
    storage.apply(tuple(Write("ks", 0, b"k:%d" % index, b"v") for index in range(100)))
    limits = TransferLimits(chunk_keys=10)
    source = OutgoingTransfer(KEY, "ks", 0, lambda key: True, 10**9, limits, now_ms=0)
    source.paused = True
    assert source.on_tick(0, storage) == []
    source.on_write(b"k:3", b"new")
    [message] = source.on_tick(1, storage)
    assert message.items == ((b"k:3", b"new"),) and not message.snapshot_done
    source.on_ack(message.sequence)
    source.paused = False
    assert len(source.on_tick(2, storage)) == limits.window_messages


def test_a_message_ahead_of_a_gap_waits_for_it() -> None:
    target = IncomingTransfer(KEY, "ks", 1)
    later = TransferData(KEY, 2, ((b"a", b"2"), (b"b", b"2")), False, False)
    first = TransferData(KEY, 1, ((b"a", b"1"),), False, False)
    writes, ack = target.on_data(later)
    assert writes == () and ack.sequence == 0  # nothing is applied past a gap
    writes, ack = target.on_data(first)
    # Both, in sequence order: the later message's record of `a` wins.
    assert writes == (Write("ks", 1, b"a", b"2"), Write("ks", 1, b"b", b"2"))
    assert ack.sequence == 2
    writes, ack = target.on_data(first)  # a duplicate: nothing applied twice
    assert writes == () and ack.sequence == 2
    beyond = TransferData(KEY, 3 + REORDER_WINDOW_MESSAGES, ((b"c", b"x"),), False, False)
    assert target.on_data(beyond)[0] == ()  # too far ahead: dropped, not kept
    for sequence in range(3, 3 + REORDER_WINDOW_MESSAGES):
        target.on_data(TransferData(KEY, sequence, (), False, False))
    assert target.applied_sequence == 2 + REORDER_WINDOW_MESSAGES


def test_a_reordered_window_is_applied_in_one_round_trip() -> None:
    """Seen in the rebalance simulation: the network reordered each window the source
    sent at once, the target applied only the next message of it, one per retransmission,
    and a source busy with writes never caught up (the plan never finished)."""
    storage = DictStorage()
    storage.apply(tuple(Write("ks", 0, b"k:%03d" % index, b"v") for index in range(80)))
    limits = TransferLimits(chunk_keys=10)
    source = OutgoingTransfer(KEY, "ks", 0, lambda key: True, 10**9, limits, now_ms=0)
    target = IncomingTransfer(KEY, "ks", 1)
    window = source.on_tick(0, storage)
    assert len(window) == limits.window_messages
    for message in reversed(window):
        writes, ack = target.on_data(message)
        source.on_ack(ack.sequence)
    assert ack.sequence == limits.window_messages
    assert source.caught_up


def test_a_source_written_between_every_two_ticks_still_seals() -> None:
    """A hot moving key written more often than the rebalancer ticks always has a write
    waiting when the seal is considered; waiting for none would never seal."""
    storage = DictStorage()
    storage.apply(tuple(Write("ks", 0, b"k:%d" % index, b"v") for index in range(20)))
    source = OutgoingTransfer(KEY, "ks", 0, lambda key: True, 10**9, TransferLimits(), 0)
    target = IncomingTransfer(KEY, "ks", 1)
    applied: dict[bytes, bytes | None] = {}
    for now_ms in range(0, 2_000, 100):
        value = b"hot%d" % now_ms
        storage.apply((Write("ks", 0, b"k:1", value),))
        source.on_write(b"k:1", value)
        if source.caught_up:
            break
        for message in source.on_tick(now_ms, storage):
            writes, ack = target.on_data(message)
            applied.update((write.key, write.value) for write in writes)
            source.on_ack(ack.sequence)
    else:
        pytest.fail("the source never caught up")
    source.seal()
    for message in source.on_tick(now_ms, storage):
        writes, ack = target.on_data(message)
        applied.update((write.key, write.value) for write in writes)
    assert target.complete
    assert applied[b"k:1"] == value  # the write waiting at the seal went out before it
