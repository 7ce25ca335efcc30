"""Webhooks on the real broker, each subscription on its own: failing endpoints, deletion, order, disable and enable.

A producer and `sluice deliver` only (events subscriptions need no worker), with local receivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from app.avro.schemas import SchemaSet
from app.core.subscription import Subscription
from app.delivery.registry import Registry
from app.delivery.webhook import DELIVERY_HEADER
from app.kafka.topology import NOTICES
from tests.support.http import LocalReceiver
from tests.support.stack import REPO, Stack, free_port, read_raw_until, unique
from tests.support.wait import until

pytestmark = pytest.mark.integration
KEY = "isolation_key"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("isolation"),
        api_keys=f"{KEY}:acme",
        SLUICE_WEBHOOK_TIMEOUT_S="1",
        SLUICE_WEBHOOK_BACKOFF_BASE_S="0.05",
        SLUICE_WEBHOOK_BACKOFF_MAX_S="0.3",
        SLUICE_WEBHOOK_RETRY_S="600",  # failing deliveries keep their partitions for the whole module
        SLUICE_WORKER_SESSION_TIMEOUT_S="6",
        SLUICE_WEBHOOK_PRIVATE_NETWORKS="127.0.0.0/8",
    )
    await stack.start_producer()
    stack.start("deliver")
    yield stack
    stack.stop()


@dataclass(frozen=True)
class Post:
    delivery: str
    status: int
    at: float  # monotonic, on arrival
    body: bytes

    @property
    def event(self) -> str:
        event: str = orjson.loads(self.body)["record"]["id"]
        return event


Status = Callable[[int, dict[str, Any]], int]  # (attempt of this delivery, its body) -> the status to answer


class Receiver(LocalReceiver):
    """Answers `status(attempt, body)` and keeps every post."""

    def __init__(self, status: Status = lambda attempt, body: 204, retry_after: str | None = None) -> None:
        super().__init__()
        self.status = status
        self.retry_after = retry_after
        self.posts: list[Post] = []

    async def handle(self, request: web.Request) -> web.Response:
        delivery, body = request.headers[DELIVERY_HEADER], await request.read()
        attempt = 1 + sum(post.delivery == delivery for post in self.posts)
        status = self.status(attempt, orjson.loads(body))
        self.posts.append(Post(delivery, status, time.monotonic(), body))
        headers = {"Retry-After": self.retry_after} if self.retry_after and status >= 300 else {}
        return web.Response(status=status, headers=headers)

    def accepted(self) -> list[Post]:
        """The first 2xx of each delivery, in arrival order."""
        seen: dict[str, Post] = {}
        for post in self.posts:
            if 200 <= post.status < 300:
                seen.setdefault(post.delivery, post)
        return list(seen.values())


async def call(http: aiohttp.ClientSession, stack: Stack, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, stack.url + path, headers={"X-API-Key": KEY}, **kwargs) as response:
        text = await response.text()
        return response.status, orjson.loads(text) if text else None


async def post_event(http: aiohttp.ClientSession, stack: Stack, user: str, **data: Any) -> str:
    body = {"data": {"user_id": user, **data}, "metadata": {"type": "order_placed"}}
    status, answer = await call(http, stack, "POST", "/topics/orders/events", json=body)
    assert status == 201, answer
    event: str = answer["id"]
    return event


async def hook(http: aiohttp.ClientSession, stack: Stack, url: str, users: list[str], **more: Any) -> dict[str, Any]:
    """A webhook subscription to these users' order events."""
    body = {"name": unique("hook"), "stream": "events", "topic": "orders", "filter": {"users": users}, "url": url}
    status, answer = await call(http, stack, "POST", "/subscriptions", json=body | more)
    assert status == 201, answer
    created: dict[str, Any] = answer
    return created


async def test_failing_endpoints_hold_back_only_their_own_subscriptions(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    users = [unique("u") for _ in range(10)]
    async with Receiver(lambda _, __: 500) as failing, Receiver() as healthy, Receiver() as later:
        refused = await hook(http, stack, f"http://127.0.0.1:{free_port()}/hook", users)  # nothing listens there
        erring = await hook(http, stack, failing.url, users)
        await hook(http, stack, healthy.url, users)
        # Steady state first: a new subscription's queue is made and joins the dispatcher's group once.
        warm = await post_event(http, stack, users[0], n=-1)
        await until(lambda: [p.event for p in healthy.accepted()] == [warm], timeout=30, what="the first delivery")
        await until(lambda: bool(failing.posts), timeout=10, what="a first failure")
        sent: dict[str, float] = {}

        async def send(user: str, n: int) -> None:
            started = time.monotonic()
            sent[await post_event(http, stack, user, n=n)] = started

        for n in range(10):  # ten users side by side, each user's events one after another
            await asyncio.gather(*(send(user, n) for user in users))
        last_sent = time.monotonic()
        await until(lambda: len(healthy.accepted()) >= 101, timeout=5, what="100 deliveries within 5 s")
        assert time.monotonic() - last_sent < 5
        arrived = {post.event: post.at for post in healthy.accepted() if post.event != warm}
        assert set(arrived) == set(sent)
        latencies = sorted(arrived[event] - sent[event] for event in sent)
        assert latencies[98] < 1.0, f"p99 {latencies[98]:.3f} s"  # the 99th of 100
        assert any(post.status == 500 for post in failing.posts)  # they were tried meanwhile

        for sub in (refused, erring):
            assert (await call(http, stack, "DELETE", f"/subscriptions/{sub['name']}"))[0] == 204
        # A record written after the deletion reaching the healthy subscription: the dispatcher has read it.
        marker = await post_event(http, stack, users[0], marker=True)
        await until(lambda: marker in {p.event for p in healthy.accepted()}, timeout=10, what="the marker")
        tried = len(failing.posts)
        await hook(http, stack, later.url, users)  # made after the deletion: not held back by it
        rest = [await post_event(http, stack, user, n=99) for user in users]
        for receiver in (healthy, later):
            await until(lambda r=receiver: set(rest) <= {p.event for p in r.accepted()}, timeout=10, what="the rest")
        assert len(failing.posts) == tried  # a deleted subscription is not tried again


async def test_each_user_s_deliveries_keep_their_order_across_retries(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    users = [unique("u") for _ in range(3)]

    def status(attempt: int, body: dict[str, Any]) -> int:  # every third delivery fails twice, then passes
        return 500 if body["record"]["data"]["n"] % 3 == 1 and attempt < 3 else 204

    async with Receiver(status) as receiver:
        await hook(http, stack, receiver.url, users)
        sent: dict[str, list[str]] = {user: [] for user in users}
        for n in range(8):
            for user in users:
                sent[user].append(await post_event(http, stack, user, n=n))
        await until(lambda: len(receiver.accepted()) >= 24, timeout=20, what="24 deliveries")
    for user in users:
        mine = [post.event for post in receiver.accepted() if post.event in sent[user]]
        assert mine == sent[user]
    assert len(receiver.posts) == 24 + 2 * 9  # n = 1, 4, 7 of each user were retried twice


async def test_an_endpoint_failing_too_long_is_disabled_and_enabling_delivers_what_waited(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user = unique("u")
    broken = True
    async with Receiver(lambda _, __: 500 if broken else 204) as receiver:
        sub = await hook(http, stack, receiver.url, [user], disable_after_s=1, retry={"max_s": 0.2})
        name = sub["name"]
        assert (sub["enabled"], sub["disable_after_s"], sub["retry"]["max_s"]) == (True, 1.0, 0.2)
        _, before = await call(http, stack, "GET", "/notices")
        first = await post_event(http, stack, user, n=0)

        async def shown() -> dict[str, Any]:
            status, answer = await call(http, stack, "GET", f"/subscriptions/{name}")
            assert status == 200
            found: dict[str, Any] = answer
            return found

        deadline = time.monotonic() + 20
        while (await shown())["enabled"]:
            assert time.monotonic() < deadline, "not disabled"
            await asyncio.sleep(0.1)
        disabled = await shown()
        assert "HTTP 500" in disabled["disabled_reason"] and disabled["disabled_at"]
        _, listed = await call(http, stack, "GET", "/subscriptions")
        assert {s["name"]: s["enabled"] for s in listed["subscriptions"]}[name] is False
        status, page = await call(http, stack, "GET", "/notices", params={"after": before["cursor"]})
        assert status == 200
        (notice,) = [n for n in page["notices"] if n["subscription"] == name]
        assert (notice["type"], notice["tenant"], notice["topic"]) == ("subscription.disabled", "acme", "orders")
        assert "HTTP 500" in notice["reason"] and notice["failing_since"] <= notice["at"]

        tried = len(receiver.posts)
        waiting = [await post_event(http, stack, user, n=n) for n in (1, 2)]
        # Kept on the subscription's queue while it is disabled, and not sent.
        queued = await read_raw_until(
            stack.bootstrap, stack.topic(f"deliveries.acme.{name}"), lambda ms: len(ms) >= 3, describe="3 queued"
        )
        assert [orjson.loads(m.value)["record"]["id"] for m in queued] == [first, *waiting]
        assert len(receiver.posts) == tried

        broken = False
        status, enabled = await call(http, stack, "POST", f"/subscriptions/{name}/enable")
        assert (status, enabled["enabled"], enabled["disabled_reason"]) == (200, True, None)
        await until(lambda: len(receiver.accepted()) >= 3, timeout=20, what="what waited, delivered")
    assert [post.event for post in receiver.accepted()] == [first, *waiting]
    _, page = await call(http, stack, "GET", "/notices", params={"after": page["cursor"]})
    assert [(n["type"], n["subscription"]) for n in page["notices"]] == [("subscription.enabled", name)]


async def test_a_webhook_disabled_by_hand_is_sent_nothing_until_enabled(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user = unique("u")
    async with Receiver() as receiver:
        name = (await hook(http, stack, receiver.url, [user]))["name"]
        status, disabled = await call(http, stack, "POST", f"/subscriptions/{name}/disable")
        assert (status, disabled["enabled"], disabled["disabled_reason"]) == (200, False, "disabled over the API")
        assert (await call(http, stack, "POST", f"/subscriptions/{name}/disable"))[1]["enabled"] is False
        waiting = await post_event(http, stack, user)
        await read_raw_until(
            stack.bootstrap, stack.topic(f"deliveries.acme.{name}"), lambda ms: len(ms) >= 1, describe="queued"
        )
        assert receiver.posts == []
        assert (await call(http, stack, "POST", f"/subscriptions/{name}/enable"))[1]["enabled"] is True
        await until(lambda: [p.event for p in receiver.accepted()] == [waiting], timeout=20, what="the delivery")


async def test_a_receiver_s_retry_after_is_honoured(stack: Stack, http: aiohttp.ClientSession) -> None:
    user = unique("u")
    async with Receiver(lambda attempt, _: 503 if attempt == 1 else 204, retry_after="1") as receiver:
        # Without Retry-After, the retry would come within 20 ms.
        await hook(http, stack, receiver.url, [user], retry={"base_s": 0.01, "max_s": 0.02})
        await post_event(http, stack, user)
        await until(lambda: len(receiver.accepted()) == 1, timeout=20, what="the retried delivery")
    first, second = receiver.posts
    assert (first.status, second.status, first.delivery) == (503, 204, second.delivery)
    assert second.at - first.at >= 0.95


async def test_refusals_name_the_field(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = "http://127.0.0.1:9/hook"
    for body, field in [
        ({"retry": {"base_s": "soon"}}, "retry.base_s"),
        ({"retry": {"max_attempts": -1}}, "retry.max_attempts"),
        ({"disable_after_s": 10**9}, "disable_after_s"),
    ]:
        body = {"name": unique("h"), "url": url, **body}
        status, answer = await call(http, stack, "POST", "/subscriptions", json=body)
        assert (status, answer["error"]["field"]) == (400, field), answer
    plain = unique("sse")
    assert (await call(http, stack, "POST", "/subscriptions", json={"name": plain}))[0] == 201
    status, answer = await call(http, stack, "POST", f"/subscriptions/{plain}/enable")
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (400, "not_a_webhook", "name")
    status, answer = await call(http, stack, "POST", f"/subscriptions/{unique('none')}/enable")
    assert (status, answer["error"]["code"]) == (404, "subscription_not_found")
    for query, field in [({"after": "%%%"}, "after"), ({"limit": "0"}, "limit")]:
        status, answer = await call(http, stack, "GET", "/notices", params=query)
        assert (status, answer["error"]["field"]) == (400, field)


async def test_a_declared_subscription_is_disabled_and_enabled_on_the_subscriptions_topic(stack: Stack) -> None:
    schemas = SchemaSet.load(REPO / "schemas")
    name = unique("declared")
    declared = Subscription(
        "acme", name, "events", "orders", url="https://example.com/h", secret="whsec_c2VjcmV0", declared=True
    )
    topic, notices = stack.topic("subscriptions"), stack.topic(NOTICES)
    one = Registry(stack.bootstrap, topic, schemas["subscription"], [declared], notices=notices)
    other = Registry(stack.bootstrap, topic, schemas["subscription"], [declared])
    await one.start()
    await other.start()
    try:
        since = datetime(2026, 1, 1, tzinfo=UTC)
        assert await one.disable("acme", name, "HTTP 500", since) is not None
        await other.sync()
        seen = other.get("acme", name)
        assert seen is not None
        assert (seen.enabled, seen.disabled_reason, seen.secret) == (False, "HTTP 500", declared.secret)
        assert (await one.enable("acme", name)).enabled
        await other.sync()
        assert other.get("acme", name) == declared and other.get("acme", name).enabled  # type: ignore[union-attr]
    finally:
        await one.stop()
        await other.stop()
    # Only the state went to the topic, never the secret from the environment.
    written = await read_raw_until(
        stack.bootstrap, topic, lambda ms: sum(m.key == f"acme:{name}".encode() for m in ms) >= 2, describe="states"
    )
    states = [schemas["subscription"].decode(m.value) for m in written if m.key == f"acme:{name}".encode()]
    assert [(s["enabled"], s["declared"], s["secret"]) for s in states] == [(False, True, None), (True, True, None)]
