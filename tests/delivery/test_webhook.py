"""The webhook sender: only permitted destinations (by address, and by what a name resolves to); the body's bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp import web

from app.core.subscription import Subscription
from app.delivery.parking import Progress
from app.delivery.payload import dumps, record_json
from app.delivery.signature import delivery_id
from app.delivery.webhook import body_of, sending
from app.settings import Settings
from tests.support.http import local_server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A webhook receiver on 127.0.0.1: its port, and the bodies it got."""
    got: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    async with local_server("/hook", hook) as url:
        yield int(url.rsplit(":", 1)[1]), got


def hook_to(url: str) -> Subscription:
    return Subscription("acme", "h", "effects", url=url, secret="s3cret")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_private_destination_is_refused_without_a_connection(
    receiver: tuple[int, list[bytes]], host: str
) -> None:
    port, got = receiver
    async with sending(Settings.from_env({"SLUICE_WEBHOOK_TIMEOUT_S": "2"}).delivery) as sender:
        outcome = await sender.attempt(hook_to(f"http://{host}:{port}/hook"), "d1", b"{}")
    assert outcome.failure is not None and "not a public address" in outcome.failure
    assert outcome.status is None
    assert got == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_listed_private_network_is_reached(receiver: tuple[int, list[bytes]], host: str) -> None:
    port, got = receiver
    async with sending(
        Settings.from_env(
            {"SLUICE_WEBHOOK_TIMEOUT_S": "2", "SLUICE_WEBHOOK_PRIVATE_NETWORKS": "127.0.0.0/8,::1/128"}
        ).delivery
    ) as sender:
        outcome = await sender.attempt(hook_to(f"http://{host}:{port}/hook"), "d1", b"{}")
    assert (outcome.ok, outcome.status) == (True, 204)
    assert got == [b"{}"]


def test_a_body_made_from_a_shared_record_json_is_the_same_bytes() -> None:
    record = {
        "id": "evt_1",
        "tenant": "acme",
        "topic": "orders",
        "data": '{"n": 1, "when": "x"}',
        "metadata": '{"type": "order_placed"}',
        "received_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }
    sub = Subscription("acme", "h", "events", "orders", url="https://example.com/h", secret="s")
    document = dumps(record_json("events", record))
    delivery = delivery_id(sub.key, "ns.events.orders", 3, 41)
    plain = body_of(sub, "ns.events.orders", 3, 41, record)
    shared = body_of(sub, "ns.events.orders", 3, 41, record, document=document, delivery=delivery)
    assert shared == plain
    assert orjson.loads(plain)["record"]["data"] == {"n": 1, "when": "x"}


def test_a_replay_s_progress_line_has_its_counts_and_rate() -> None:
    assert Progress(replayed=1500, parked=4000).line(2.0) == "replayed 1,500 of 4,000 parked in 2 s, 750/s"
    assert Progress().line(0.0) == "replayed 0 of 0 parked in 0 s, 0/s"
