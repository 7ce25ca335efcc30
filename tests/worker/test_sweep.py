"""Dedupe entries past the window are deleted, in RocksDB and (as tombstones) in the changelog."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from rocksdict import Options, Rdict

from app import ledger
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.settings import Settings
from app.worker.sweep import Sweep
from tests.support.stack import SCHEMAS, Stack, read_raw_until, read_until
from tests.support.streams import Sender

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entry(applied: datetime) -> bytes:
    return orjson.dumps({"applied_at_ms": epoch_ms(applied)})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Rdict]:
    rdict = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    yield rdict
    rdict.close()


def test_the_sweep_goes_round_the_entries_and_names_the_expired(db: Rdict) -> None:
    old, fresh = T0 - timedelta(seconds=11), T0 - timedelta(seconds=9)
    for n in range(5):
        db[orjson.dumps(["e", "t", "orders", f"id{n}"])] = entry(old if n % 2 == 0 else fresh)
    db[orjson.dumps(["u", "t", "someone"])] = b"{}"  # user records sort after entries and are never read
    db[b"__faust\x00offset__"] = b"12"
    sweep = Sweep()

    def step() -> list[bytes]:
        return sweep.step(0, db, budget=2, now=T0, dedupe_window_s=10)

    rounds = [step(), step(), step(), step()]
    names = [[orjson.loads(key)[3] for key in keys] for keys in rounds]
    assert names == [["id0"], ["id2"], ["id4"], ["id0"]]  # two at a time, then round again


@pytest.mark.integration
async def test_an_expired_entry_is_deleted_and_tombstoned(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = Stack.create(kafka_bootstrap, tmp_path, api_keys="sweep_key:acme", SLUICE_DEDUPE_WINDOW_S="1")
    settings = Settings.from_env(stack.env)
    await ensure_topics(settings.kafka.bootstrap, Deployment.load(settings).topology)
    user = f"u-{uuid.uuid4().hex[:8]}"

    def order(event_id: str) -> Envelope:
        now = datetime.now(UTC)
        return Envelope(
            id=event_id,
            tenant="acme",
            topic="orders",
            type="order_placed",
            user_id=user,
            occurred_at=now,
            received_at=now,
            dialect="pubsub",
        )

    first = order("first")
    entry_key, _ = ledger.keys(first)
    stack.start("worker")
    try:
        async with Sender(stack.bootstrap, stack.topic("events.orders"), SCHEMAS["event"]) as sender:
            await sender.send([first])
            await read_until(stack.bootstrap, stack.topic("effects"), lambda rs: len(rs) == 1, describe="first effect")

            async def keep_sending() -> None:
                # Same user, so the same partition: each batch there moves the sweep on.
                while True:
                    await sender.send([order(uuid.uuid4().hex)])
                    await asyncio.sleep(0.3)

            filler = asyncio.create_task(keep_sending())
            try:
                changelog = await read_raw_until(
                    stack.bootstrap,
                    stack.topic(f"{settings.worker.app_id}-ledger-changelog"),
                    lambda ms: any(m.key == entry_key and m.value is None for m in ms),
                    timeout=60,
                    describe="a tombstone for the expired entry",
                )
            finally:
                filler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await filler
        writes = [m for m in changelog if m.key == entry_key]
        assert writes[0].value is not None and writes[-1].value is None
    finally:
        stack.stop()
