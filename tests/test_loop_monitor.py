"""The event-loop monitor counts a blocked loop as a stall, and only then."""

from __future__ import annotations

import asyncio
import time

import pytest

from quorumdb.runtime.loop_monitor import LoopMonitor


def test_lateness_under_the_threshold_is_no_stall() -> None:
    monitor = LoopMonitor(interval_ms=20, stall_ms=30)
    monitor.record_lateness(0.029)
    assert monitor.stall_count == 0 and monitor.longest_stall_seconds == 0
    monitor.record_lateness(0.045)
    monitor.record_lateness(0.031)
    assert monitor.stall_count == 2
    assert monitor.stall_seconds == pytest.approx(0.076)
    assert monitor.longest_stall_seconds == pytest.approx(0.045)


def test_a_callback_that_blocks_the_loop_is_counted() -> None:
    async def scenario() -> LoopMonitor:
        monitor = LoopMonitor(interval_ms=10, stall_ms=30)
        task = asyncio.get_running_loop().create_task(monitor.run())
        await asyncio.sleep(0.03)
        time.sleep(0.1)  # what an fsync stuck behind other disk traffic does to the loop
        await asyncio.sleep(0.03)
        task.cancel()
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.stall_count >= 1
    assert monitor.longest_stall_seconds >= 0.06


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LoopMonitor(interval_ms=0)
