"""A producer, a worker and a dispatcher exporting spans: counters after known traffic, the group's lag, one trace
from the request to the webhook."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.observability.tracing import TRACEPARENT
from tests.observability.otlp import OtlpReceiver
from tests.observability.records import record_of, traceparent
from tests.observability.scrape import Scrape, scrape, until_scraped
from tests.support.http import LocalReceiver
from tests.support.stack import Stack, unique
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
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # the SDK exports every 5 s by default
        SLUICE_WEBHOOK_PRIVATE_NETWORKS="127.0.0.0/8",  # the test's receivers
        SLUICE_WEBHOOK_BACKOFF_BASE_S="0.05",
        SLUICE_WEBHOOK_BACKOFF_MAX_S="0.1",
    )
    await stack.start_producer()
    stack.start("worker")
    stack.start("deliver")
    yield stack
    stack.stop()


class Receiver(LocalReceiver):
    """Answers 500 to the first `failing` requests, then 204; keeps every request's headers and body."""

    def __init__(self, failing: int = 0) -> None:
        super().__init__()
        self.failing = failing
        self.broken = False  # while set, every request is answered 500
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), orjson.loads(await request.read())))
        if self.broken or len(self.requests) <= self.failing:
            return web.Response(status=500)
        return web.Response(status=204)

    def delivered(self, event_id: str) -> list[dict[str, str]]:
        return [headers for headers, body in self.requests if body["record"]["event_id"] == event_id]


def deliver_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['SLUICE_DELIVER_METRICS_PORT']}"


async def subscribe(stack: Stack, user: str, url: str) -> None:
    body = {"name": unique("hook"), "url": url, "filter": {"users": [user]}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/subscriptions", json=body, headers={"X-API-Key": KEY}) as r,
    ):
        assert r.status == 201, await r.text()


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


async def test_the_dispatchers_counters_after_known_deliveries(stack: Stack) -> None:
    before = await until_scraped(deliver_url(stack), lambda s: True, "the dispatcher's /metrics")
    user = unique("user")
    async with Receiver(failing=2) as receiver:
        await subscribe(stack, user, receiver.url)
        for _ in range(3):
            assert await post(stack, order(user), unique("ord")) == 201
        await until(lambda: len(receiver.requests) == 5, timeout=60, what="3 deliveries after 2 failures")

    def grew(now: Scrape, name: str, **labels: str) -> float:
        return now.value(name, **labels) - before.value(name, **labels)

    after = await until_scraped(
        deliver_url(stack),
        lambda s: grew(s, "sluice_deliveries_total", outcome="delivered") == 3,
        "the dispatcher's delivered count",
    )
    assert grew(after, "sluice_deliveries_total", outcome="delivered", status_class="2xx") == 3
    assert grew(after, "sluice_deliveries_total", outcome="failed", status_class="5xx") == 2
    assert grew(after, "sluice_delivery_retries_total") == 2
    assert grew(after, "sluice_delivery_attempt_duration_seconds_count") == 5
    assert grew(after, "sluice_deliveries_parked_total") == 0


async def test_a_subscriptions_backlog_rises_while_its_endpoint_fails_and_falls_after(stack: Stack) -> None:
    user, name = unique("user"), unique("hook")

    def backlog(s: Scrape) -> float:
        return s.value("sluice_subscription_backlog_records", tenant="acme", subscription=name)

    async with Receiver() as receiver:
        receiver.broken = True
        body = {"name": name, "url": receiver.url, "filter": {"users": [user]}}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{stack.url}/subscriptions", json=body, headers={"X-API-Key": KEY}) as r,
        ):
            assert r.status == 201, await r.text()
        for _ in range(3):
            assert await post(stack, order(user), unique("ord")) == 201
        await until_scraped(deliver_url(stack), lambda s: backlog(s) == 3, "a backlog of 3 while the endpoint fails")
        receiver.broken = False
        await until_scraped(deliver_url(stack), lambda s: backlog(s) == 0, "no backlog once it answers")


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
    await until_scraped(
        worker_url(stack),
        lambda s: stack.topic("events.orders") in {x["topic"] for x in s.labels("sluice_worker_consumer_lag_records")},
        "the worker's own lag gauge of the orders topic",
    )


async def test_one_trace_from_the_request_to_the_effect_and_its_webhook(stack: Stack, otlp: OtlpReceiver) -> None:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    event_id, user = unique("traced"), unique("user")
    headers = {TRACEPARENT: f"00-{trace_id}-{caller}-01", "tracestate": "vendor=1"}
    async with Receiver() as receiver:
        await subscribe(stack, user, receiver.url)
        assert await post(stack, order(user), event_id, headers) == 201
        await until(lambda: bool(receiver.delivered(event_id)), timeout=60, what="the effect's webhook")
    (hook,) = receiver.delivered(event_id)

    event = await record_of(stack, "events.orders", event_id)
    effect = await record_of(stack, "effects", event_id)
    _, event_trace, event_span, _ = traceparent(event)
    _, effect_trace, effect_span, _ = traceparent(effect)
    assert event_trace == effect_trace == trace_id
    assert len({caller, event_span, effect_span}) == 3
    assert dict(event.headers)["tracestate"] == dict(effect.headers)["tracestate"] == b"vendor=1"

    _, hook_trace, hook_span, _ = hook[TRACEPARENT].split("-")
    assert hook_trace == trace_id
    assert hook.get("tracestate") == "vendor=1"

    def spans() -> dict[str, Any]:
        return {span.service: span for span in otlp.spans if span.trace_id == trace_id}

    await until(lambda: len(spans()) == 3, timeout=30, what="the producer's, the worker's and the dispatcher's spans")
    producer, worker, deliver = spans()["sluice-producer"], spans()["sluice-worker"], spans()["sluice-deliver"]
    assert (producer.parent_span_id, producer.span_id) == (caller, event_span)
    assert (worker.parent_span_id, worker.span_id) == (event_span, effect_span)
    assert (deliver.parent_span_id, deliver.span_id) == (effect_span, hook_span)
