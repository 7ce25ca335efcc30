"""The Intake's timer: which partitions it seeks back, from what the fetch loop handed it and the log's end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import TP, Message

from app.settings import Settings
from app.worker import intake
from app.worker.main import build_app

TOPIC = "events.t"
TP0 = TP(TOPIC, 0)


class Partition:
    """What the timer reads of faust's consumer for one partition, and the seeks it makes."""

    def __init__(self, consumer: Any, *, end: int) -> None:
        self.end = end
        self.sought: list[int] = []
        self.resumed = 0
        consumer.assignment = lambda: {TP0}
        consumer.highwater = lambda tp: self.end
        consumer.resume_partitions = self.resume
        consumer.seek_in_thread = self.seek

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append(offset)

    def resume(self, tps: set[TP]) -> None:
        self.resumed += 1


@pytest.fixture
def timer(tmp_path: Path) -> tuple[Any, intake.Intake]:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path)
    app = build_app(settings)
    app.consumer_generation_id = 3
    taken = intake.Intake(app, settings, intake.source(app, TOPIC, partitions=1))
    taken._progress.seek_every_s = 0  # every tick is "two ticks later"

    async def committed(tp: TP) -> int:
        return 45

    cast(Any, taken)._start_of = committed
    return app, taken


def record(offset: int, generation: int = 3) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=generation)


async def test_a_partition_at_the_logs_end_is_not_sought_because_faust_was(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=45)
    app.consumer._read_offset[TP0] = 45  # faust's seek to the committed offset sets it so
    for _ in range(4):
        await taken._seek_stuck()
    assert partition.sought == []


async def test_records_handed_on_past_a_still_position_are_sought(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=45)  # the last fetch response's end, before these came
    for offset in range(46, 51):  # 45 never came
        taken._inbox.put(record(offset))
    await taken._seek_stuck()
    await taken._seek_stuck()
    assert partition.sought == [45] and partition.resumed == 1
    await taken._seek_stuck()
    assert partition.sought == [45]  # sought: what was handed on before says nothing now


async def test_records_waiting_in_the_log_are_sought_and_resumed(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=60)
    await taken._seek_stuck()
    await taken._seek_stuck()
    assert partition.sought == [45] and partition.resumed == 1


async def test_records_of_an_earlier_generation_say_nothing(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=45)
    taken._inbox.put(record(50, generation=2))
    for _ in range(3):
        await taken._seek_stuck()
    assert partition.sought == []


async def test_nothing_is_sought_once_faust_rebalances_or_recovers(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=60)
    await taken._seek_stuck()

    def recovering(tp: TP) -> int:
        app.in_recovery = True  # began while the timer went through the partitions
        return 60

    app.consumer.highwater = recovering
    await taken._seek_stuck()
    assert partition.sought == [] and partition.resumed == 0
