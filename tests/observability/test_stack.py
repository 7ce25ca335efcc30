"""A producer and a worker exporting spans: counters after known traffic, the group's lag, one trace end to end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.observability.tracing import TRACEPARENT
from tests.observability.otlp import OtlpReceiver
from tests.observability.scrape import Scrape, scrape, until_scraped
from tests.support.stack import SCHEMAS, Stack, read_raw_until, unique
from tests.support.wait import until

pytestmark = pytest.mark.integration
KEY = "obs_key_1"
ROUTE = "/topics/{topic_slug}/events"
PARTITIONS = 4  # SLUICE_PARTITIONS' default
REASON = "validation.required"  # the error code of an event without a user id


@pytest.fixture(scope="module")
async def otlp() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver
) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("observed"),
        api_keys=f"{KEY}:acme",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK exports every 5 s by default
    )
    await stack.start_producer()
    stack.start("worker")
    yield stack
    stack.stop()


def worker_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['SLUICE_WORKER_PORT']}"


async def post(stack: Stack, body: object, event_id: str, headers: dict[str, str] | None = None) -> int:
    sent = {"X-API-Key": KEY, "Idempotency-Key": event_id, **(headers or {})}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/topics/orders/events", json=body, headers=sent) as r,
    ):
        return r.status


def order(user: str) -> dict[str, Any]:
    return {"data": {"user_id": user, "sku": "a"}, "metadata": {"type": "order_placed"}}


async def test_counters_after_known_traffic(stack: Stack) -> None:
    user = unique("user")
    ids = [unique("ord") for _ in range(7)]
    for event_id in ids:
        assert await post(stack, order(user), event_id) == 201
    for event_id in ids[:2]:  # repeats: accepted by the producer, dropped by the worker
        assert await post(stack, order(user), event_id) == 201
    for n in range(2):  # no user: refused whole, reason named
        assert await post(stack, {"data": {"sku": "a"}, "metadata": {"type": "order_placed"}}, f"bad-{n}") == 400

    producer = await scrape(stack.url)
    assert producer.value("sluice_events_accepted_total", dialect="pubsub", tenant="acme") == 9
    assert producer.value("sluice_events_refused_total", dialect="pubsub", tenant="acme", reason=REASON) == 2
    assert producer.value("sluice_http_requests_total", route=ROUTE, method="POST", status="201") == 9
    assert producer.value("sluice_http_requests_total", route=ROUTE, method="POST", status="400") == 2
    assert producer.value("sluice_http_request_body_bytes_count", route=ROUTE) == 11
    assert producer.value("sluice_publish_duration_seconds_count") >= 9

    worker = await until_scraped(
        worker_url(stack),
        lambda s: (
            s.value("sluice_worker_effects_written_total") >= 7
            and s.value("sluice_worker_duplicates_dropped_total") >= 2
        ),
        "the worker's effects and duplicates",
    )
    assert worker.value("sluice_worker_effects_written_total") == 7
    assert worker.value("sluice_worker_events_applied_total") == 7
    assert worker.value("sluice_worker_duplicates_dropped_total") == 2
    assert worker.value("sluice_worker_rules_fired_total", topic="orders", rule="count-orders") == 7
    assert worker.value("sluice_worker_event_to_effect_seconds_count") == 7
    assert worker.value("sluice_worker_batch_events_sum") == 9
    assert worker.value("sluice_worker_rebalances_total") >= 1


async def test_the_group_lag_rises_while_the_worker_is_stopped_and_falls_after(stack: Stack) -> None:
    def lag(s: Scrape) -> float:
        topic = stack.topic("events.orders")
        assert len([x for x in s.labels("sluice_consumer_group_lag_records") if x["topic"] == topic]) == PARTITIONS
        return s.value("sluice_consumer_group_lag_records", topic=topic)

    user = unique("user")
    assert await post(stack, order(user), unique("ord")) == 201
    await until_scraped(stack.url, lambda s: lag(s) == 0, "no lag before the stop")
    stack.processes["worker"].stop()
    for _ in range(5):
        assert await post(stack, order(user), unique("ord")) == 201
    assert lag(await scrape(stack.url)) == 5
    stack.start("worker")
    await until_scraped(stack.url, lambda s: lag(s) == 0, "no lag once the worker is back")
    worker = await until_scraped(
        worker_url(stack), lambda s: bool(s.labels("sluice_worker_consumer_lag_records")), "the worker's own lag gauge"
    )
    assert {labels["topic"] for labels in worker.labels("sluice_worker_consumer_lag_records")} >= {
        stack.topic("events.orders")
    }


async def test_one_trace_from_the_request_to_the_effect(stack: Stack, otlp: OtlpReceiver) -> None:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    event_id = unique("traced")
    headers = {TRACEPARENT: f"00-{trace_id}-{caller}-01", "tracestate": "vendor=1"}
    assert await post(stack, order(unique("user")), event_id, headers) == 201

    def header(message: Any) -> str:
        return dict(message.headers)[TRACEPARENT].decode()

    def identity(message: Any) -> str:
        record = SCHEMAS.decode(message.value)[1]
        return str(record.get("event_id", record.get("id")))  # an effect's, an event's

    async def of_event(topic: str) -> Any:
        messages = await read_raw_until(
            stack.bootstrap,
            stack.topic(topic),
            lambda ms: any(identity(m) == event_id for m in ms),
            describe=f"{event_id} on {topic}",
        )
        (found,) = [m for m in messages if identity(m) == event_id]
        return found

    event = await of_event("events.orders")
    effect = await of_event("effects")
    _, event_trace, event_span, _ = header(event).split("-")
    _, effect_trace, effect_span, _ = header(effect).split("-")
    assert event_trace == effect_trace == trace_id
    assert len({caller, event_span, effect_span}) == 3
    assert dict(event.headers)["tracestate"] == dict(effect.headers)["tracestate"] == b"vendor=1"

    def spans() -> dict[str, Any]:
        return {span.service: span for span in otlp.spans if span.trace_id == trace_id}

    await until(lambda: len(spans()) == 2, timeout=30, what="the producer's and the worker's spans")
    producer, worker = spans()["sluice-producer"], spans()["sluice-worker"]
    assert (producer.parent_span_id, producer.span_id) == (caller, event_span)
    assert (worker.parent_span_id, worker.span_id) == (event_span, effect_span)
