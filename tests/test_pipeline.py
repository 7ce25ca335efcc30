"""End to end on the real broker: HTTP post -> events topic -> worker -> effects topic."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.record.default_records import DefaultRecordBatch

from tests.support.stack import Stack, read_until
from tests.support.topics import stored_codecs

pytestmark = pytest.mark.integration
KEY = "it_key_1"


# The worker's two engines: the compiled core (app/native) and the Python engine, its reference.
ENGINES = {"compiled": "rules engine: compiled", "python": "rules engine: Python"}


@pytest.fixture(scope="module", params=sorted(ENGINES))
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    engine: str = request.param
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("pipeline"),
        api_keys=f"{KEY}:acme",
        SLUICE_WORKER_COMPILED=str(engine == "compiled").lower(),
    )
    await stack.start_producer()
    worker = stack.start("worker")
    yield stack
    stack.stop()
    assert worker.log is not None and ENGINES[engine] in worker.log.read_text()


async def post(stack: Stack, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": KEY}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/topics/orders/events", json=body, headers=headers) as response,
    ):
        assert response.status == 201, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["event_id"] for record in records]


async def test_posted_event_yields_one_effect_and_a_duplicate_yields_none(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    first = await post(stack, {"data": {"user_id": user, "sku": "a"}, "metadata": {"type": "order_placed"}}, "order-1")
    assert first == {"id": "order-1"}

    effects = await read_until(
        stack.bootstrap, stack.topic("effects"), lambda rs: "order-1" in ids(rs), describe="effect of order-1"
    )
    (effect,) = [r for r in effects if r["event_id"] == "order-1"]
    assert effect["tenant"] == "acme"
    assert effect["topic"] == "orders"
    assert effect["user_id"] == user
    assert effect["event_type"] == "order_placed"
    assert effect["rules_fired"] == ["count-orders", "coins-per-order"]
    assert (effect["changes"]["coins"], effect["changes"]["counters"]) == (10, {"orders": 1})
    assert (effect["totals"]["coins"], effect["totals"]["counters"]) == (10, {"orders": 1})
    assert len(effect["rules_version"]) == 12

    again = await post(stack, {"data": {"user_id": user, "sku": "a"}, "metadata": {"type": "order_placed"}}, "order-1")
    assert again == {"id": "order-1"}
    # Same user, so same partition: once the next event's effect is out, the duplicate was seen.
    sentinel = (await post(stack, {"data": {"user_id": user}, "metadata": {"type": "order_placed"}}))["id"]
    effects = await read_until(
        stack.bootstrap, stack.topic("effects"), lambda rs: sentinel in ids(rs), describe="sentinel effect"
    )
    assert ids(effects).count("order-1") == 1
    (last,) = [r for r in effects if r["event_id"] == sentinel]
    assert (last["totals"]["coins"], last["totals"]["counters"]) == (20, {"orders": 2})


async def test_the_ledger_changelog_is_stored_compressed_and_the_effects_as_subscribers_read_them(
    stack: Stack,
) -> None:
    sent = (await post(stack, {"data": {"user_id": f"user-{uuid.uuid4().hex[:8]}"}}))["id"]
    await read_until(stack.bootstrap, stack.topic("effects"), lambda rs: sent in ids(rs), describe="its effect")
    changelog = stack.topic("sluice-ledger-changelog")  # faust's name: the app id, the table, "changelog"
    assert set(await stored_codecs(stack.bootstrap, changelog, partitions=4)) == {DefaultRecordBatch.CODEC_ZSTD}
    effects = await stored_codecs(stack.bootstrap, stack.topic("effects"), partitions=4)
    assert set(effects) == {DefaultRecordBatch.CODEC_NONE}


async def test_the_event_lands_on_its_topic_as_avro_keyed_by_tenant_and_user(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    event_id = (await post(stack, {"data": {"user_id": user, "n": 1}, "metadata": {"source": "test"}}))["id"]
    records = await read_until(
        stack.bootstrap,
        stack.topic("events.orders"),
        lambda rs: any(r["id"] == event_id for r in rs),
        describe="event on its topic",
    )
    (record,) = [r for r in records if r["id"] == event_id]
    assert (record["tenant"], record["topic"], record["user_id"]) == ("acme", "orders", user)
    assert record["data"] == f'{{"user_id":"{user}","n":1}}'
    assert record["metadata"] == '{"source":"test"}'
    assert record["dialect"] == "pubsub"


async def test_users_are_counted_apart(stack: Stack, tmp_path: Path) -> None:
    users = [f"user-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    posted = [
        (await post(stack, {"data": {"user_id": user}, "metadata": {"type": "orders"}}))["id"]
        for user in users
        for _ in range(2)
    ]
    effects = await read_until(
        stack.bootstrap, stack.topic("effects"), lambda rs: set(posted) <= set(ids(rs)), describe="all effects"
    )
    finals = {r["user_id"]: (r["totals"]["coins"], r["totals"]["counters"]) for r in effects if r["event_id"] in posted}
    assert finals == {user: (20, {"orders": 2}) for user in users}
