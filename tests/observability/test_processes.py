"""Two producer processes on one port, nothing exported: counters summed over both, trace context passed on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.observability.tracing import TRACEPARENT
from tests.observability.records import record_of, traceparent
from tests.observability.scrape import scrape
from tests.support.stack import Stack, unique

pytestmark = pytest.mark.integration
KEY = "obs_key_2"
REQUESTS = 24


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap, tmp_path_factory.mktemp("processes"), api_keys=f"{KEY}:globex", SLUICE_PRODUCER_PROCESSES="2"
    )
    await stack.start_producer()
    stack.start("worker")
    yield stack
    stack.stop()


async def post(stack: Stack, event_id: str, headers: dict[str, str] | None = None) -> None:
    body = {"data": {"user_id": unique("user"), "sku": "a"}, "metadata": {"type": "order_placed"}}
    sent = {"X-API-Key": KEY, "Idempotency-Key": event_id, **(headers or {})}
    # A connection of its own per request: the kernel spreads connections over the two processes.
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/topics/orders/events", json=body, headers=sent) as response,
    ):
        assert response.status == 201, await response.text()


async def test_every_scrape_counts_both_processes(stack: Stack) -> None:
    for _ in range(REQUESTS):
        await post(stack, unique("ord"))
    # Each scrape lands on either process; each must see all the requests, whichever served them.
    for _ in range(6):
        scraped = await scrape(stack.url)
        assert scraped.value("sluice_events_accepted_total", dialect="pubsub", tenant="globex") == REQUESTS


async def test_the_trace_context_reaches_the_effect_without_an_exporter(stack: Stack) -> None:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    event_id = unique("traced")
    await post(stack, event_id, {TRACEPARENT: f"00-{trace_id}-{caller}-01"})

    event = traceparent(await record_of(stack, "events.orders", event_id))
    effect = traceparent(await record_of(stack, "effects", event_id))
    assert event[1] == effect[1] == trace_id
    assert len({caller, event[2], effect[2]}) == 3  # a new span at each hop
    assert event[3] == effect[3] == "01"  # the caller's sampling decision, passed on
