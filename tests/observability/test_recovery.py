"""A worker's state recovery: a progress line every few seconds, counts and rate, and the gauges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from app.worker import faust_compat
from app.worker.main import build_app
from app.worker.observed import Recovery
from tests.support.deployments import offline


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_logged_every_few_seconds_with_counts_and_rate() -> None:
    clock, lines = Clock(), []

    def say(message: str, *args: Any) -> None:
        lines.append(message % args)

    recovery = Recovery(every_s=5.0, clock=clock, say=say)
    recovery.sample(None)
    assert lines == []  # no recovery, nothing said
    for now, remaining in ((0, 10_000), (2, 8_000), (5, 5_000), (7, 4_000), (10, 1_000)):
        clock.now = now
        recovery.sample(remaining)
    clock.now = 11
    recovery.sample(None)
    assert lines == [
        "state recovery: 10000 changelog records to replay",
        "state recovery: 5000 of 10000 changelog records replayed (50%), 1000 records/s, about 5 s left",
        "state recovery: 9000 of 10000 changelog records replayed (90%), 800 records/s, about 1 s left",
        "state recovery done: 10000 changelog records replayed in 11.0 s",
    ]
    assert REGISTRY.get_sample_value("sluice_worker_recovery_records") == 10_000
    assert REGISTRY.get_sample_value("sluice_worker_recovery_recovered_records") == 10_000


def test_partitions_added_mid_recovery_grow_the_whole() -> None:
    clock, lines = Clock(), []
    recovery = Recovery(every_s=5.0, clock=clock, say=lambda message, *args: lines.append(message % args))
    recovery.sample(100)
    clock.now = 1
    recovery.sample(50)
    clock.now = 5
    recovery.sample(130)  # 50 left of the first, 80 of a partition the rebalance added
    assert lines[-1] == ("state recovery: 50 of 180 changelog records replayed (28%), 10 records/s, about 13 s left")


def test_a_stalled_recovery_says_so() -> None:
    clock, lines = Clock(), []
    recovery = Recovery(every_s=5.0, clock=clock, say=lambda message, *args: lines.append(message % args))
    recovery.sample(100)
    clock.now = 6
    recovery.sample(100)
    assert lines[-1].endswith("0 records/s, none replayed since the last line")


def test_faust_says_what_a_recovery_has_left(tmp_path: Path) -> None:
    # faust_compat.recovery_remaining reads faust's recovery service: pinned here against its upgrades.
    app = build_app(offline(tmp_path))
    assert faust_compat.recovery_remaining(app) is None
    recovery: Any = app.tables.recovery
    recovery.in_recovery = True
    assert faust_compat.recovery_remaining(app) == 0  # nothing assigned, nothing to replay
