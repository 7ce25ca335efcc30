"""The Intake's timer: which partitions it seeks back, from what the fetch loop handed it and the log's end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaError
from faust.types import TP, Message

from app.worker import intake
from app.worker.main import build_app
from tests.support.deployments import offline
from tests.worker.inboxes import put

TOPIC = "events.t"
TP0 = TP(TOPIC, 0)


class Partition:
    """What the timer reads of faust's consumer for one partition, and the seeks it makes."""

    def __init__(self, consumer: Any, *, end: int) -> None:
        self.end = end
        self.sought: list[int] = []
        self.resumed = 0
        consumer.assignment = consumer.assigned = lambda: {TP0}
        consumer.highwater = lambda tp: self.end
        consumer.resume_partitions = self.resume
        consumer.seek = self.seek

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append(offset)

    def resume(self, tps: set[TP]) -> None:
        self.resumed += 1


class Starts:
    """Where partitions start (the log at 0, the group committed 45), and the asks for it."""

    def __init__(self, consumer: Any) -> None:
        self.asked: list[tuple[str, list[TP]]] = []
        consumer.earliest_offsets = self.earliest

    async def earliest(self, *tps: TP) -> dict[TP, int]:
        self.asked.append(("earliest", sorted(tps)))
        return dict.fromkeys(tps, 0)

    async def get(self, tps: list[TP]) -> dict[TP, int]:
        self.asked.append(("committed", sorted(tps)))
        return dict.fromkeys(tps, 45)


class Broker:
    """What the Intake's probe reads of the log: the records go on at `first` (default: right there)."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}

    async def first_at(self, where: tuple[str, int], offset: int) -> int:
        return self.first.get(offset, offset)


@pytest.fixture
def timer(tmp_path: Path) -> tuple[Any, intake.Intake]:
    deployment = offline(tmp_path)
    settings = deployment.settings
    app = build_app(deployment)
    app.consumer_generation_id = 3
    taken = intake.Intake(app, intake.IntakeConfig.of(settings), intake.source(app, TOPIC, partitions=1))
    taken._progress.seek_every_s = 0  # every tick is "two ticks later"
    taken._committed = cast(Any, Starts(app.consumer))
    taken._probe = cast(Any, Broker())
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
        put(taken._inbox, record(offset))
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


async def test_partitions_with_no_record_yet_are_started_in_one_ask(timer: tuple[Any, intake.Intake]) -> None:
    # A partition at a time would be a broker round trip each, made while the batch lock is held.
    app, taken = timer
    Partition(app.consumer, end=45)
    mine = [TP(TOPIC, p) for p in range(20)]
    app.consumer.assignment = app.consumer.assigned = lambda: {*mine, TP("other", 0)}
    starts = cast(Starts, taken._committed)
    await taken._seek_stuck()
    await taken._seek_stuck()
    assert starts.asked == [("earliest", mine), ("committed", mine)]
    assert all(taken._progress.position(tp) == 45 for tp in mine)


async def test_a_batch_starts_its_new_partitions_in_one_ask(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    mine = [TP(TOPIC, p) for p in range(3)]
    app.consumer.assignment = app.consumer.assigned = lambda: set(mine)
    starts = cast(Starts, taken._committed)
    runs = [
        [Message(TOPIC, p, offset, 0.0, 0, [], b"k", b"v", None, generation_id=3) for offset in (45, 46)]
        for p in range(3)
    ]
    admitted, _ = await taken._admit_runs(runs)
    assert starts.asked == [("earliest", mine), ("committed", mine)]
    assert admitted == [message for run in runs for message in run]


async def test_records_of_an_earlier_generation_say_nothing(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    partition = Partition(app.consumer, end=45)
    put(taken._inbox, record(50, generation=2))
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


class Commits:
    """faust's consumer commit, answered when the test says."""

    def __init__(self, consumer: Any) -> None:
        self.asked: list[dict[TP, int]] = []
        self.answers: list[asyncio.Future[bool]] = []
        consumer._commit = self.commit
        consumer.assignment = consumer.assigned = lambda: {TP0}

    async def commit(self, offsets: dict[TP, int]) -> bool:
        self.asked.append(dict(offsets))
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        return await answer


async def settle() -> None:
    """Let the commit's task and its done callback run."""
    for _ in range(5):
        await asyncio.sleep(0)


def applied(taken: intake.Intake, up_to: int) -> None:
    """As if the batch loop applied TP0's records up to `up_to`."""
    taken._generation = 3
    if not taken._progress.knows(TP0):
        taken._progress.start(TP0, up_to)
    while taken._progress.position(TP0) < up_to:
        taken._progress.admit(TP0, taken._progress.position(TP0))
    taken._due[TP0] = up_to


async def committing(app: Any, taken: intake.Intake, up_to: int) -> Commits:
    """Records applied up to `up_to`, and a commit of them asked for (not answered)."""
    commits = Commits(app.consumer)
    applied(taken, up_to)
    await taken._commit()
    await settle()
    return commits


async def test_a_commit_does_not_hold_the_batch_loop(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    commits = await asyncio.wait_for(committing(app, taken, 50), timeout=1)  # returns with the commit out
    assert commits.asked == [{TP0: 50}] and not commits.answers[0].done()
    applied(taken, 60)
    await taken._commit()  # the last is still out: these offsets wait for the next
    assert len(commits.asked) == 1
    commits.answers[0].set_result(True)
    await settle()
    taken._committed_at = 0
    await taken._commit()
    await settle()
    assert commits.asked[-1] == {TP0: 60}


async def test_a_failed_commit_leaves_its_partitions_due(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    commits = await committing(app, taken, 50)
    assert taken._due == {}
    commits.answers[0].set_result(False)  # faust's answer when the group rebalanced meanwhile
    await settle()
    assert taken._due == {TP0: 50}


async def test_partitions_are_given_away_after_the_commit_in_flight(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    commits = await committing(app, taken, 50)
    revoking = asyncio.create_task(taken._finish_the_batch(app))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    commits.answers[0].set_result(True)
    await asyncio.wait_for(revoking, timeout=1)


async def test_offsets_the_broker_shows_empty_are_skipped_and_committed(timer: tuple[Any, intake.Intake]) -> None:
    # A transactional producer's markers at 45 and 46: no record will ever fill them.
    app, taken = timer
    partition = Partition(app.consumer, end=50)
    cast(Any, taken._probe).first = {45: 47}
    for offset in range(47, 50):
        put(taken._inbox, record(offset))
    await taken._seek_stuck()
    await taken._seek_stuck()
    assert partition.sought == [47]  # not to 45, which would be sought for ever
    assert taken._progress.position(TP0) == 47 and taken._due == {TP0: 47}


class Stream:
    """The agent's stream as the Intake uses it: iterating its channel subscribes (here, to nothing)."""

    channel = None

    def __init__(self) -> None:
        self.channel = self

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> None:
        raise StopAsyncIteration


def batch_loop(taken: intake.Intake) -> Any:
    taken._config = dataclasses.replace(taken._config, commit_interval_s=0)  # commit at every step
    return taken.batches(cast(Any, Stream()))


async def test_the_next_batch_is_applied_while_the_last_ones_writes_are_out(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    commits = Commits(app.consumer)
    batches = batch_loop(taken)
    for offset in (45, 46):
        put(taken._inbox, record(offset))
    assert [m.offset for m in await anext(batches)] == [45, 46]
    acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    taken.writing(acks)
    put(taken._inbox, record(47))
    assert [m.offset for m in await asyncio.wait_for(anext(batches), timeout=1)] == [47]
    assert commits.asked == []  # the first batch's writes are out: nothing of it is committed
    following = asyncio.create_task(anext(batches))  # waits for the first batch's acks
    await settle()
    assert commits.asked == []
    acks.set_result(None)
    await settle()
    assert commits.asked == [{TP0: 48}]  # both batches, once the first is written
    await stopped(following, batches)


async def test_a_failed_write_stops_the_batch_loop_with_nothing_committed(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    commits = Commits(app.consumer)
    batches = batch_loop(taken)
    put(taken._inbox, record(45))
    await anext(batches)
    acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    acks.set_exception(KafkaError("not written"))
    taken.writing(acks)
    put(taken._inbox, record(46))
    await anext(batches)
    with pytest.raises(KafkaError):
        await anext(batches)
    assert commits.asked == []


async def test_partitions_are_given_away_once_the_last_batchs_writes_are_in(timer: tuple[Any, intake.Intake]) -> None:
    app, taken = timer
    Commits(app.consumer)
    batches = batch_loop(taken)
    put(taken._inbox, record(45))
    await anext(batches)
    acks: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    taken.writing(acks)
    following = asyncio.create_task(anext(batches))  # the loop goes on to wait for records
    await settle()
    revoking = asyncio.create_task(taken._finish_the_batch(app))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    acks.set_result(None)
    await asyncio.wait_for(revoking, timeout=1)
    await stopped(following, batches)


async def stopped(following: asyncio.Task[Any], batches: Any) -> None:
    """The batch loop, waiting for records, stopped as the agent's end stops it."""
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following
    await batches.aclose()
