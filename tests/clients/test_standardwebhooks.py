"""Webhooks verified by the standardwebhooks library, unmodified, across secret rotations, on a real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support.http import LocalReceiver
from tests.support.stack import Stack

pytestmark = pytest.mark.integration
KEY = "swh_key_1"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("standardwebhooks"),
        api_keys=f"{KEY}:acme,other_key:globex",
        SLUICE_WEBHOOK_PRIVATE_NETWORKS="127.0.0.0/8",  # the test's receiver
    )
    await stack.start_producer()
    stack.start("deliver")
    yield stack
    stack.stop()


class Receiver(LocalReceiver):
    """A webhook endpoint that keeps each request's headers and raw body, and verifies with the trusted secret."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.trusted: str | None = None  # what this receiver's operator has configured

    async def handle(self, request: web.Request) -> web.Response:
        headers, body = dict(request.headers), await request.read()
        self.requests.append((headers, body))
        try:
            assert self.trusted is not None
            Webhook(self.trusted).verify(body, headers)
        except (AssertionError, WebhookVerificationError):
            return web.Response(status=401)
        return web.Response(status=204)

    async def delivery_of(self, event_id: str, timeout: float = 60.0) -> tuple[dict[str, str], bytes]:
        """The first request that delivered the event `event_id`."""
        deadline = time.monotonic() + timeout
        while True:
            for headers, body in self.requests:
                if orjson.loads(body)["record"]["id"] == event_id:
                    return headers, body
            assert time.monotonic() < deadline, f"no delivery of {event_id}; got {len(self.requests)} requests"
            await asyncio.sleep(0.05)


def verifies(secret: str, delivery: tuple[dict[str, str], bytes]) -> bool:
    headers, body = delivery
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def call(stack: Stack, method: str, path: str, key: str = KEY, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, headers={"X-API-Key": key}, **kwargs) as response,
    ):
        text = await response.text()
        return response.status, orjson.loads(text) if text else None


async def publish(stack: Stack, user: str, n: int) -> str:
    body = {"data": {"user_id": user, "n": n}, "metadata": {"type": "order_placed"}}
    status, answer = await call(stack, "POST", "/topics/orders/events", json=body)
    assert status < 300, answer
    event_id: str = answer["id"]
    return event_id


async def webhook(stack: Stack, receiver: Receiver) -> tuple[str, str, str]:
    """A webhook subscription to a new user's order events: (user, name, secret)."""
    user, name = "u-" + uuid.uuid4().hex[:8], "hook-" + uuid.uuid4().hex[:8]
    body = {"name": name, "stream": "events", "topic": "orders", "filter": {"users": [user]}, "url": receiver.url}
    status, created = await call(stack, "POST", "/subscriptions", json=body)
    assert status == 201, created
    secret: str = created["secret"]
    assert secret.startswith("whsec_")
    return user, name, secret


async def test_each_delivery_verifies_with_the_secret_answered_at_creation(stack: Stack) -> None:
    async with Receiver() as receiver:
        user, _, secret = await webhook(stack, receiver)
        receiver.trusted = secret
        event_id = await publish(stack, user, 0)
        delivery = await receiver.delivery_of(event_id)
    headers, body = delivery
    assert Webhook(secret).verify(body, headers)["record"]["id"] == event_id
    assert headers["webhook-id"] == orjson.loads(body)["id"] == headers["Sluice-Delivery-Id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert "Sluice-Signature" not in headers
    assert not verifies("whsec_" + "QUFB" * 8, delivery)
    assert len(receiver.requests) == 1  # verified, answered 204, not retried


async def test_after_a_rotation_both_secrets_verify_until_the_next_one(stack: Stack) -> None:
    async with Receiver() as receiver:
        user, name, first = await webhook(stack, receiver)
        receiver.trusted = first
        before = await receiver.delivery_of(await publish(stack, user, 0))

        status, rotated = await call(stack, "POST", f"/subscriptions/{name}/rotate-secret")
        assert status == 200, rotated
        second = rotated["secret"]
        assert second.startswith("whsec_") and second != first
        assert (rotated["name"], rotated["url"]) == (name, receiver.url)
        until = datetime.fromisoformat(rotated["previous_secret_until"])
        assert abs(until - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
        status, shown = await call(stack, "GET", f"/subscriptions/{name}")
        assert status == 200 and "secret" not in shown  # shown once, in the rotation's answer

        # The receiver still trusts the first secret: deliveries go on while it switches over.
        during = await receiver.delivery_of(await publish(stack, user, 1))
        assert verifies(first, during) and verifies(second, during)
        assert len(during[0]["webhook-signature"].split(" ")) == 2
        receiver.trusted = second
        switched = await receiver.delivery_of(await publish(stack, user, 2))
        assert verifies(first, switched) and verifies(second, switched)

        status, again = await call(stack, "POST", f"/subscriptions/{name}/rotate-secret")
        assert status == 200, again
        third = again["secret"]
        after = await receiver.delivery_of(await publish(stack, user, 3))
    assert verifies(first, before) and not verifies(second, before)
    assert verifies(third, after) and verifies(second, after)
    assert not verifies(first, after)  # a second rotation ends the first secret's overlap


async def test_rotation_refusals_name_the_field(stack: Stack) -> None:
    async with Receiver() as receiver:
        _, name, _ = await webhook(stack, receiver)
        status, answer = await call(stack, "POST", f"/subscriptions/{name}/rotate-secret", key="wrong")
        assert status == 401, answer
        status, answer = await call(stack, "POST", f"/subscriptions/{name}/rotate-secret", key="other_key")
        assert (status, answer["error"]["code"], answer["error"]["field"]) == (404, "subscription_not_found", "name")
    status, answer = await call(stack, "POST", "/subscriptions", json={"name": "plain-" + uuid.uuid4().hex[:8]})
    assert status == 201, answer
    status, answer = await call(stack, "POST", f"/subscriptions/{answer['name']}/rotate-secret")
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (400, "not_a_webhook", "name")
