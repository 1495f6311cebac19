"""The collector's tuning and the pause account behind quorumdb_gc_pause_seconds."""

from __future__ import annotations

import gc

from quorumdb.gc_tuning import GC_THRESHOLDS, GcPauses, tune_for_hot_loop


def test_pauses_are_counted_by_generation() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # idempotent: one callback, not two
    try:
        gc.collect()  # a full collection
        assert pauses.collections[2] == 1
        assert pauses.seconds[2] > 0.0
        gc.collect(0)
        assert pauses.collections[0] == 1
    finally:
        gc.callbacks.remove(pauses._on_collection)


def test_tuning_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_for_hot_loop()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
