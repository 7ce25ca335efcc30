"""Scheduled delivery and wait groups on the real broker: HTTP -> scheduled / wait group topics -> worker -> topics."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.settings import Settings
from tests.support.stack import SCHEMAS, Stack, read_raw_until, read_until
from tests.worker.test_crash import wait_ready

pytestmark = pytest.mark.integration
KEY, OTHER = "sched_key_1", "sched_key_2"
KEYS = f"{KEY}:acme,{OTHER}:globex"
RETENTION_S = 3


async def start_stack(bootstrap: str, workdir: Path) -> Stack:
    # Ended wait group instances are forgotten RETENTION_S after their deadline (7 days by default).
    stack = Stack.create(
        bootstrap,
        workdir,
        api_keys=KEYS,
        SLUICE_WORKER_SESSION_TIMEOUT_S="6",
        SLUICE_WAIT_GROUP_RETENTION_S=str(RETENTION_S),
    )
    settings = Settings.from_env(stack.env)
    await ensure_topics(settings.kafka.bootstrap, Deployment.load(settings).topology)
    await stack.start_producer()
    stack.start("worker")
    return stack


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await start_stack(kafka_bootstrap, tmp_path_factory.mktemp("scheduling"))
    await wait_ready(stack.processes["worker"], 0)  # delivery times measure the worker running, not its start
    yield stack
    stack.stop()


async def call(
    stack: Stack, method: str, path: str, body: Any = None, *, key: str = KEY, **headers: str
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, json=body, headers={"X-API-Key": key, **headers}) as response,
    ):
        return response.status, await response.json()


def at(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def order(user: str, **fields: Any) -> dict[str, Any]:
    return {"data": {"user_id": user}, "metadata": {"type": "order_placed"}, **fields}


async def publish(stack: Stack, topic: str, body: dict[str, Any], *, key: str = KEY) -> str:
    status, answer = await call(stack, "POST", f"/topics/{topic}/events", body, key=key)
    assert status == 201, answer
    event_id: str = answer["id"]
    return event_id


async def arrivals(stack: Stack, topic: str, wanted: set[str], timeout: float = 60.0) -> dict[str, list[Any]]:
    """Raw records of events.<topic> by event id, once every wanted id is there."""

    def by_id(messages: list[Any]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for message in messages:
            found.setdefault(SCHEMAS.decode(message.value)[1]["id"], []).append(message)
        return found

    messages = await read_raw_until(
        stack.bootstrap,
        stack.topic(f"events.{topic}"),
        lambda ms: wanted <= set(by_id(ms)),
        timeout=timeout,
        describe=f"events {sorted(wanted)}",
    )
    return by_id(messages)


async def listed(stack: Stack, *, key: str = KEY, topic: str = "orders") -> set[str]:
    status, answer = await call(stack, "GET", f"/scheduled?topic={topic}", key=key)
    assert status == 200, answer
    return {s["id"] for s in answer["scheduled"]}


# --- scheduled delivery -----------------------------------------------------------------------


async def test_send_at_two_seconds_ahead_is_delivered_after_not_before(stack: Stack) -> None:
    send_at = at(2.0)
    event_id = await publish(stack, "orders", order(f"u-{uuid.uuid4().hex[:8]}", send_at=send_at.isoformat()))
    assert event_id in await listed(stack)

    found = await arrivals(stack, "orders", {event_id})
    (message,) = found[event_id]
    due_ms = int(send_at.timestamp() * 1000)
    late_ms = message.timestamp - due_ms
    print(f"delivered {late_ms} ms after send_at")
    assert late_ms >= 0
    assert late_ms < 1000  # the promise: within one second
    await read_until(
        stack.bootstrap,
        stack.topic("effects"),
        lambda rs: event_id in {r["event_id"] for r in rs},
        describe=f"the effect of {event_id}",
    )
    deadline = time.monotonic() + 10
    while event_id in await listed(stack):
        assert time.monotonic() < deadline, "a delivered event is still listed"
        await asyncio.sleep(0.1)


async def test_send_at_in_the_past_or_null_is_delivered_now(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    past = await publish(stack, "orders", order(user, send_at=at(-60).isoformat()))
    null = await publish(stack, "orders", order(user, send_at=None))
    assert not {past, null} & await listed(stack)
    found = await arrivals(stack, "orders", {past, null})
    assert len(found[past]) == len(found[null]) == 1


async def test_a_cancelled_event_is_never_delivered(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    cancelled = await publish(stack, "orders", order(user, send_at=at(3).isoformat()))
    # A later one for the same user, so on the same partition after it.
    sentinel = await publish(stack, "orders", order(user, send_at=at(4).isoformat()))
    status, answer = await call(stack, "DELETE", f"/scheduled/{cancelled}")
    assert status == 200, answer
    assert [s["id"] for s in answer["cancelled"]] == [cancelled]
    assert await listed(stack) >= {sentinel}
    assert cancelled not in await listed(stack)
    status, answer = await call(stack, "DELETE", f"/scheduled/{cancelled}")
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (404, "scheduled_not_found", "event_id")
    found = await arrivals(stack, "orders", {sentinel})
    assert cancelled not in found


async def test_scheduled_events_are_the_tenants_own(stack: Stack) -> None:
    event_id = await publish(stack, "orders", order("shared-user", send_at=at(30).isoformat()))
    assert event_id in await listed(stack)
    assert event_id not in await listed(stack, key=OTHER)
    status, answer = await call(stack, "DELETE", f"/scheduled/{event_id}", key=OTHER)
    assert (status, answer["error"]["field"]) == (404, "event_id")
    assert event_id in await listed(stack)  # still pending for its owner
    status, answer = await call(stack, "GET", "/scheduled?topic=nope")
    assert (status, answer["error"]["field"]) == (404, "topic")
    status, _ = await call(stack, "DELETE", f"/scheduled/{event_id}")
    assert status == 200


async def test_reading_to_the_end_does_not_wait_out_the_readers_fetch(stack: Stack) -> None:
    # End offsets asked on the reader's own connection queue behind its 500 ms long-poll fetch.
    took = []
    for _ in range(5):
        started = time.monotonic()
        await listed(stack)
        took.append(time.monotonic() - started)
    assert sorted(took)[2] < 0.25, f"GET /scheduled took {sorted(took)} s"


async def test_the_topics_the_producer_reads_from_the_start_are_compacted(stack: Stack) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        names = ["scheduled", "wait_groups", "wait_group_events"]
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, stack.topic(n)) for n in names]
        )
    finally:
        await admin.close()
    policies = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"] for resource in response.resources
    }
    assert policies == {
        stack.topic("scheduled"): "compact",
        stack.topic("wait_groups"): "compact",
        stack.topic("wait_group_events"): "delete",
    }


# --- wait groups ------------------------------------------------------------------------------


async def new_group(stack: Stack, timeout_s: float, *, key: str = KEY) -> str:
    body = {"topics": {"orders": 2, "usage": 1}, "target_topic": "orders", "timeout_s": timeout_s}
    status, answer = await call(stack, "POST", "/wait-groups", body, key=key)
    assert status == 201, answer
    group_id: str = answer["id"]
    return group_id


async def new_instance(stack: Stack, group_id: str, *, key: str = KEY) -> str:
    status, answer = await call(stack, "POST", f"/wait-groups/{group_id}/instances", {"user_id": "wg-user"}, key=key)
    assert status == 201, answer
    instance_id: str = answer["wait_group_instance_id"]
    return instance_id


async def test_a_wait_group_completes_once_in_any_order_and_times_out_otherwise(stack: Stack) -> None:
    group = await new_group(stack, timeout_s=8)
    done, left = await new_instance(stack, group), await new_instance(stack, group)
    usage = await publish(stack, "usage", order("a", wait_group_instance_id=done))
    first = await publish(stack, "orders", order("b", wait_group_instance_id=done))
    # The same event again (a client retry) counts once.
    status, _ = await call(
        stack, "POST", "/topics/orders/events", order("b", wait_group_instance_id=done), **{"Idempotency-Key": first}
    )
    assert status == 201
    await publish(stack, "orders", order("c", wait_group_instance_id=left))
    second = await publish(stack, "orders", order("d", wait_group_instance_id=done))

    completed, timed_out = f"{done}:completed", f"{left}:timed_out"
    found = await arrivals(stack, "orders", {completed, timed_out}, timeout=60)
    (outcome,) = found[completed]
    record = SCHEMAS.decode(outcome.value)[1]
    assert record["type"] == "wait_group.completed"
    assert record["user_id"] == "wg-user"
    data = orjson.loads(record["data"])
    assert sorted(data["event_ids"]) == sorted([usage, first, second])
    assert data["missing"] == {}
    assert len(found[timed_out]) == 1
    # `left`'s deadline is after `done`'s, so by now `done` was past its deadline too.
    assert f"{done}:timed_out" not in found
    assert f"{left}:completed" not in found
    late = SCHEMAS.decode(found[timed_out][0].value)[1]
    assert orjson.loads(late["data"])["missing"] == {"orders": 1, "usage": 1}


async def test_an_ended_instance_is_deleted_after_its_retention(stack: Stack) -> None:
    # Else the worker's table, the compacted wait_groups topic and every producer's copy of it
    # keep every instance ever started.
    group = await new_group(stack, timeout_s=1)
    instance = await new_instance(stack, group)
    status, _ = await call(stack, "POST", "/topics/orders/events", order("y", wait_group_instance_id=instance))
    assert status == 201
    key = f"acme:{instance}".encode()

    def deleted(messages: list[Any]) -> bool:
        return any(m.key == key and m.value is None for m in messages)

    # Timed out at 1 s, forgotten RETENTION_S later: a tombstone on the topic, and one in the table.
    found = await read_raw_until(
        stack.bootstrap, stack.topic("wait_groups"), deleted, timeout=60, describe="a tombstone"
    )
    assert [m.value is None for m in found if m.key == key] == [False, True]  # the instance, then its tombstone
    await read_raw_until(
        stack.bootstrap, stack.topic("sluice-wait_groups-changelog"), deleted, timeout=60, describe="the table's delete"
    )
    status, answer = await call(stack, "POST", "/topics/orders/events", order("z", wait_group_instance_id=instance))
    assert (status, answer["error"]["field"], answer["error"]["code"]) == (
        400,
        "wait_group_instance_id",
        "wait_group_instance_not_found",
    )


async def test_wait_groups_are_the_tenants_own(stack: Stack) -> None:
    group = await new_group(stack, timeout_s=60)
    instance = await new_instance(stack, group)
    status, answer = await call(stack, "GET", f"/wait-groups/{group}")
    assert (status, answer["topics"]) == (200, {"orders": 2, "usage": 1})
    status, answer = await call(stack, "GET", f"/wait-groups/{group}", key=OTHER)
    assert (status, answer["error"]["field"]) == (404, "group_id")
    status, answer = await call(stack, "POST", f"/wait-groups/{group}/instances", {}, key=OTHER)
    assert (status, answer["error"]["field"]) == (404, "group_id")
    status, answer = await call(
        stack, "POST", "/topics/orders/events", order("x", wait_group_instance_id=instance), key=OTHER
    )
    assert (status, answer["error"]["field"]) == (400, "wait_group_instance_id")
    kept = await read_until(
        stack.bootstrap,
        stack.topic("dlq.globex"),
        lambda rs: any(r["field"] == "wait_group_instance_id" for r in rs),
        describe="the refused event on the other tenant's dead-letter topic",
    )
    (refused,) = [r for r in kept if r["field"] == "wait_group_instance_id"]
    assert (refused["tenant"], refused["code"]) == ("globex", "wait_group_instance_not_found")
    assert instance in refused["body"].decode()
    status, answer = await call(stack, "POST", "/topics/orders/events", order("x", wait_group_instance_id="wgi_no"))
    assert (status, answer["error"]["code"]) == (400, "wait_group_instance_not_found")
    status, answer = await call(stack, "POST", "/topics/segment/events", order("x", wait_group_instance_id=instance))
    assert (status, answer["error"]["code"]) == (400, "wait_group_topic")


async def test_a_wait_group_definition_names_the_wrong_field(stack: Stack) -> None:
    cases = [
        ({"topics": [], "target_topic": "orders", "timeout_s": 5}, "topics"),
        ({"topics": ["nope"], "target_topic": "orders", "timeout_s": 5}, "topics[0]"),
        ({"topics": {"orders": 0}, "target_topic": "orders", "timeout_s": 5}, "topics.orders"),
        ({"topics": ["orders"], "target_topic": "nope", "timeout_s": 5}, "target_topic"),
        ({"topics": ["orders"], "target_topic": "orders", "timeout_s": -1}, "timeout_s"),
        ({"topics": ["orders"], "target_topic": "orders"}, "timeout_s"),
        ({"topics": ["orders"], "target_topic": "orders", "timeout_s": 5, "x": 1}, "x"),
    ]
    for body, field in cases:
        status, answer = await call(stack, "POST", "/wait-groups", body)
        assert (status, answer["error"]["field"]) == (400, field), body


async def changelog_holds(stack: Stack, table: str, count: int) -> None:
    """Wait until the worker's table has written `count` records to its changelog: it holds them."""
    await read_raw_until(
        stack.bootstrap,
        stack.topic(f"sluice-{table}-changelog"),
        lambda ms: len(ms) >= count,
        timeout=90,
        describe=f"{count} records in the {table} table",
    )


async def committed(stack: Stack, topic: str, count: int) -> None:
    """Wait until the worker's group has committed `count` records of `topic`: a restart will not read them again."""
    group = Settings.from_env(stack.env).group_id
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            if sum(meta.offset for tp, meta in offsets.items() if tp.topic == stack.topic(topic)) >= count:
                return
            assert time.monotonic() < deadline, f"{count} records of {topic} not committed within 60 s"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


@pytest.mark.timeout(240)
async def test_scheduled_events_and_wait_groups_survive_a_worker_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = await start_stack(kafka_bootstrap, tmp_path)
    try:
        await wait_ready(stack.processes["worker"], 0)
        group = await new_group(stack, timeout_s=120)
        instance = await new_instance(stack, group)
        before = await publish(stack, "usage", order("a", wait_group_instance_id=instance))
        send_at = at(10.0)
        event_id = await publish(stack, "orders", order("restart-user", send_at=send_at.isoformat()))
        await changelog_holds(stack, "scheduled", 1)
        await changelog_holds(stack, "wait_groups", 2)  # the instance, then the event counted
        # Committed: the restarted worker finds them only in its tables, not by reading the commands again.
        await committed(stack, "scheduled", 1)
        await committed(stack, "wait_group_events", 2)
        stack.processes["worker"].kill()
        assert datetime.now(UTC) < send_at, "the worker was not killed before the event was due; inconclusive"
        shutil.rmtree(stack.workdir / "data")  # RocksDB gone too: the tables come back from their changelogs

        # With no worker, a due event stays pending, and can no longer be cancelled.
        await asyncio.sleep((send_at - datetime.now(UTC)).total_seconds() + 0.05)  # the clock is the condition
        status, answer = await call(stack, "DELETE", f"/scheduled/{event_id}")
        assert (status, answer["error"]["code"]) == (409, "scheduled_already_due")
        assert event_id in await listed(stack)

        stack.start("worker")
        after = [await publish(stack, "orders", order(u, wait_group_instance_id=instance)) for u in ("b", "c")]
        completed = f"{instance}:completed"
        found = await arrivals(stack, "orders", {event_id, completed}, timeout=120)
        assert all(m.timestamp >= int(send_at.timestamp() * 1000) for m in found[event_id])
        outcome = SCHEMAS.decode(found[completed][0].value)[1]
        assert sorted(orjson.loads(outcome["data"])["event_ids"]) == sorted([before, *after])
    finally:
        stack.stop()
