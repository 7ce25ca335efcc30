"""The pub/sub vendor's SDK, sailhouse, unmodified against real producer processes: publish, list, pull, ack, nack."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from sailhouse import Event, SailhouseClient, SailhouseError

from app.core.tenants import hash_key
from tests.support.stack import SCHEMAS, Stack, read_raw_until, read_until, unique

pytestmark = pytest.mark.integration
KEY, OTHER_TENANT = "sail_key_acme", "sail_key_globex"
LIMITED = "sail_key_gamification_only"  # tenant acme, limited to the gamification topic
LOCK_S = 3.0  # SLUICE_PULL_LOCK_S here: redelivery is seen without waiting the vendor's 30 s
T = TypeVar("T")


@pytest.fixture(scope="module")
def base_url() -> Iterator[None]:
    # sailhouse 0.1.1 builds every URL from the class attribute and ignores its base_url argument.
    original = SailhouseClient.BASE_URL
    yield
    SailhouseClient.BASE_URL = original


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, base_url: None) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("sailhouse")
    keys_file = workdir / "keys.yaml"
    keys_file.write_text(f"keys:\n  - {{sha256: {hash_key(LIMITED)}, tenant: acme, topics: [gamification]}}\n")
    stack = Stack.create(
        kafka_bootstrap,
        workdir,
        api_keys=f"{KEY}:acme,{OTHER_TENANT}:globex",
        SLUICE_KEYS_FILE=str(keys_file),
        SLUICE_PRODUCER_PROCESSES="2",  # `sluice producer` runs two processes on one port
        SLUICE_PULL_LOCK_S=str(LOCK_S),
    )
    await stack.start_producer()
    SailhouseClient.BASE_URL = stack.url  # the one line a user changes
    yield stack
    stack.stop()


def run(call: Coroutine[Any, Any, T]) -> T:
    """Run one SDK call to its end: its methods are coroutines that block on `requests` inside."""
    return asyncio.run(call)


async def sdk(call: Coroutine[Any, Any, T]) -> T:
    return await asyncio.to_thread(run, call)


async def publish(user: str, n: int, client: SailhouseClient | None = None) -> None:
    data = {"user_id": user, "n": n}
    await sdk((client or SailhouseClient(KEY)).publish("orders", data, metadata={"type": "order_placed"}))


async def subscribe(http: aiohttp.ClientSession, stack: Stack, users: list[str], **fields: Any) -> str:
    """A subscription of tenant acme to the orders topic's events, of these users only."""
    name = unique("pull")
    body = {"name": name, "stream": "events", "topic": "orders", "filter": {"users": users}, **fields}
    async with http.post(f"{stack.url}/subscriptions", json=body, headers={"X-API-Key": KEY}) as response:
        assert response.status == 201, await response.text()
    return name


async def call(
    http: aiohttp.ClientSession, stack: Stack, method: str, path: str, key: str = KEY
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, stack.url + path, headers={"Authorization": key}) as response:
        text = await response.text()
        return response.status, orjson.loads(text) if text else {}


async def pull(sub: str) -> Event[Any] | None:
    event: Event[Any] | None = await sdk(SailhouseClient(KEY).pull("orders", sub))
    return event


def numbers(events: list[Event[Any]]) -> list[int]:
    return [event.data["n"] for event in events]


# --- publish -----------------------------------------------------------------------------------


async def test_publish_answers_201_and_the_event_is_on_its_kafka_topic(stack: Stack) -> None:
    client = SailhouseClient(KEY)
    user = unique("pub")
    await sdk(client.publish("orders", {"user_id": user, "sku": "book-17"}, metadata={"type": "order_placed"}))
    later = datetime.now(UTC) + timedelta(hours=1)
    await sdk(client.publish("orders", {"user_id": user, "sku": "later"}, scheduled_time=later))

    records = await read_until(
        stack.bootstrap, stack.topic("events.orders"), lambda rs: any(r["user_id"] == user for r in rs), timeout=30
    )
    (record,) = [r for r in records if r["user_id"] == user]
    assert (record["tenant"], record["topic"], record["type"], record["dialect"]) == (
        "acme",
        "orders",
        "order_placed",
        "pubsub",
    )
    assert orjson.loads(record["data"]) == {"user_id": user, "sku": "book-17"}

    def scheduled(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events = [SCHEMAS.decode(c["event"])[1] for c in commands if c["op"] == "schedule"]
        return [e for e in events if e["user_id"] == user]

    commands = await read_until(stack.bootstrap, stack.topic("scheduled"), lambda cs: bool(scheduled(cs)), timeout=30)
    (waiting,) = scheduled(commands)
    assert waiting["send_at"] == later.replace(microsecond=later.microsecond // 1000 * 1000)


async def test_a_refused_publish_says_which_field(stack: Stack) -> None:
    with pytest.raises(SailhouseError, match=r"400 .*data\.user_id"):
        await sdk(SailhouseClient(KEY).publish("orders", {"sku": "no user"}))
    with pytest.raises(SailhouseError, match=r"401"):
        await sdk(SailhouseClient("not-a-key").publish("orders", {"user_id": "u"}))


# --- listing -----------------------------------------------------------------------------------


async def test_get_events_pages_through_the_events_not_acked(stack: Stack, http: aiohttp.ClientSession) -> None:
    user = unique("list")
    sub = await subscribe(http, stack, [user])
    for n in range(5):
        await publish(user, n)
    client = SailhouseClient(KEY)

    everything = await sdk(client.get_events("orders", sub))
    assert numbers(everything.events) == [0, 1, 2, 3, 4]
    assert (everything.offset, everything.limit) == (0, 100)
    pages = [await sdk(client.get_events("orders", sub, limit=2, offset=offset)) for offset in (0, 2, 4)]
    assert [numbers(page.events) for page in pages] == [[0, 1], [2, 3], [4]]
    assert [(page.offset, page.limit) for page in pages] == [(0, 2), (2, 2), (4, 2)]
    assert numbers((await sdk(client.get_events("orders", sub, time_window="6h"))).events) == [0, 1, 2, 3, 4]

    await sdk(everything.events[0].ack())  # an event from a listing is acked as it stands
    assert numbers((await sdk(client.get_events("orders", sub))).events) == [1, 2, 3, 4]
    await asyncio.sleep(1.2)
    assert (await sdk(client.get_events("orders", sub, time_window="1s"))).events == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("time_window=6x", "time_window"),
        ("time_window=h", "time_window"),
        ("time_window=0m", "time_window"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=%C2%B2", "limit"),
        ("offset=-1", "offset"),
        ("offset=" + "9" * 5000, "offset"),
    ],
)
async def test_bad_list_parameters_are_400_naming_the_field(
    stack: Stack, http: aiohttp.ClientSession, query: str, field: str
) -> None:
    sub = await subscribe(http, stack, [unique("u")])
    status, body = await call(http, stack, "GET", f"/topics/orders/subscriptions/{sub}/events?{query}")
    assert (status, body["error"]["field"]) == (400, field), body


# --- pull, ack, nack ---------------------------------------------------------------------------


async def test_pull_locks_the_earliest_event_and_ack_and_nack_settle_it(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    first, second = unique("a"), unique("b")
    sub = await subscribe(http, stack, [first, second])
    await publish(first, 1)
    await publish(second, 2)

    one, two = await pull(sub), await pull(sub)
    assert one is not None and two is not None
    assert (one.data, two.data) == ({"user_id": first, "n": 1}, {"user_id": second, "n": 2})
    assert await pull(sub) is None  # both locked: 204

    await sdk(SailhouseClient(KEY).nack_message("orders", sub, two.id))
    again = await pull(sub)
    assert again is not None and again.id == two.id  # a nacked event goes out again at once

    await sdk(one.ack())
    assert [e.id for e in (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events] == [two.id]
    await sdk(again.ack())
    assert await pull(sub) is None
    assert (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events == []
    # Acking again is fine; nacking an acked event is a conflict.
    await sdk(again.ack())
    status, body = await call(http, stack, "POST", f"/topics/orders/subscriptions/{sub}/events/{two.id}/nack")
    assert (status, body["error"]["field"], body["error"]["code"]) == (409, "event_id", "event_acked")


async def test_pull_with_get_and_the_vendors_answer_shape(stack: Stack, http: aiohttp.ClientSession) -> None:
    user = unique("shape")
    sub = await subscribe(http, stack, [user])
    path = f"/topics/orders/subscriptions/{sub}/events/pull"
    assert (await call(http, stack, "GET", path))[0] == 204
    await publish(user, 7)
    status, body = await call(http, stack, "GET", path)
    assert status == 200
    assert set(body) == {"id", "data", "metadata", "timestamp"}
    assert (body["data"], body["metadata"]) == ({"user_id": user, "n": 7}, {"type": "order_placed"})
    assert abs(datetime.fromisoformat(body["timestamp"]) - datetime.now(UTC)) < timedelta(minutes=1)
    status, answer = await call(http, stack, "POST", f"/topics/orders/subscriptions/{sub}/events/{body['id']}")
    assert (status, answer) == (200, {"id": body["id"], "status": "acked"})


async def test_a_users_events_go_out_one_at_a_time_in_order(stack: Stack, http: aiohttp.ClientSession) -> None:
    user = unique("order")
    sub = await subscribe(http, stack, [user])
    for n in range(3):
        await publish(user, n)
    first = await pull(sub)
    assert first is not None and first.data["n"] == 0
    assert await pull(sub) is None  # the user's next event waits for the first one's ack
    await sdk(first.ack())
    second = await pull(sub)
    assert second is not None and second.data["n"] == 1
    await sdk(SailhouseClient(KEY).nack_message("orders", sub, second.id))
    again = await pull(sub)
    assert again is not None and again.id == second.id  # nacked: still before the user's later events
    await sdk(again.ack())
    third = await pull(sub)
    assert third is not None and third.data["n"] == 2


async def test_an_event_not_acked_in_time_is_handed_out_again(stack: Stack, http: aiohttp.ClientSession) -> None:
    user = unique("late")
    sub = await subscribe(http, stack, [user])
    await publish(user, 1)
    first = await pull(sub)
    assert first is not None
    assert await pull(sub) is None
    await asyncio.sleep(LOCK_S + 0.5)
    again = await pull(sub)
    assert again is not None and again.id == first.id
    await sdk(again.ack())


# --- who may see what --------------------------------------------------------------------------


async def test_subscriptions_are_the_tenants_own_and_match_the_topics_events(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user = unique("own")
    sub = await subscribe(http, stack, [user])
    await publish(user, 1)
    events = f"/topics/orders/subscriptions/{sub}/events"
    listed = (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events
    event_id = listed[0].id

    async def refused(method: str, path: str, key: str = KEY) -> tuple[int, str, str]:
        status, body = await call(http, stack, method, path, key)
        return status, body["error"]["field"], body["error"]["code"]

    for method, path in (("GET", events), ("POST", events + "/pull"), ("POST", f"{events}/{event_id}")):
        # Another tenant's subscription is as absent as one never made.
        assert await refused(method, path, OTHER_TENANT) == (404, "subscription", "subscription_not_found")
        assert await refused(method, path, LIMITED) == (403, "topic_slug", "topic_forbidden")
    with pytest.raises(SailhouseError, match="404"):
        await sdk(SailhouseClient(OTHER_TENANT).pull("orders", sub))
    assert await refused("GET", f"/topics/segment/subscriptions/{sub}/events") == (
        404,
        "subscription",
        "subscription_not_on_topic",
    )
    effects = unique("effects")
    async with http.post(
        f"{stack.url}/subscriptions", json={"name": effects, "topic": "orders"}, headers={"X-API-Key": KEY}
    ) as response:
        assert response.status == 201
    assert await refused("POST", f"/topics/orders/subscriptions/{effects}/events/pull") == (
        404,
        "subscription",
        "subscription_not_on_topic",
    )
    assert await refused("GET", f"/topics/nope/subscriptions/{sub}/events") == (404, "topic_slug", "topic_not_found")
    assert await refused("GET", "/topics/orders/subscriptions/nope/events") == (
        404,
        "subscription",
        "subscription_not_found",
    )
    for path in (f"{events}/evt_never_sent", f"{events}/evt_never_sent/nack", f"{events}/%FF%2Fx"):
        assert await refused("POST", path) == (404, "event_id", "event_not_found")
    # The other tenant's ack went nowhere: the event is still waiting.
    assert [e.id for e in (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events] == [event_id]


# --- several processes, and restarts -----------------------------------------------------------


@dataclass(frozen=True)
class Handed:
    event_id: str
    user: str
    n: int
    puller: int
    at: float


def puller(sub: str, number: int, handed: list[Handed]) -> None:
    """Pull and ack until the subscription stays empty; a new client (a new connection) per call,
    so the kernel spreads the calls over both producer processes."""
    empty = 0
    while empty < 3:
        event = run(SailhouseClient(KEY).pull("orders", sub))
        if event is None:
            empty += 1
            time.sleep(0.2)
            continue
        empty = 0
        handed.append(Handed(event.id, event.data["user_id"], event.data["n"], number, time.monotonic()))
        run(SailhouseClient(KEY).acknowledge_message("orders", sub, event.id))


async def test_concurrent_pullers_on_two_processes_each_get_an_event_alone(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    users = [unique("many") for _ in range(6)]
    sub = await subscribe(http, stack, users)
    for n in range(4):
        await asyncio.gather(*(publish(user, n) for user in users))
    handed: list[Handed] = []
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=6) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, puller, sub, number, handed) for number in range(6)))

    copies: dict[str, list[Handed]] = {}
    for h in sorted(handed, key=lambda h: h.at):
        copies.setdefault(h.event_id, []).append(h)
    assert len(copies) == 24
    # Pullers ack at once, so each event goes out once, unless a puller stalled past the lock;
    # never to a second puller while the lock runs.
    for first, again in (pair for hs in copies.values() for pair in itertools.pairwise(hs)):
        assert again.at - first.at >= LOCK_S - 0.5, (first, again)
    assert len({h.puller for h in handed}) > 1
    for user in users:  # a user's next event went out only after the previous one was acked
        assert [hs[0].n for hs in copies.values() if hs[0].user == user] == [0, 1, 2, 3]
    assert (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events == []

    # Both processes handed events out: each lock's token starts with its writer's host:pid.
    prefix = f"acme:{sub}:".encode()
    records = await read_raw_until(
        stack.bootstrap,
        stack.topic("pulls"),
        lambda ms: sum(m.key.startswith(prefix) and b'"ack"' in m.value for m in ms) >= 24,
        timeout=30,
    )
    changes = [orjson.loads(m.value) for m in records if m.key.startswith(prefix)]
    assert len({c["token"].split(":")[1] for c in changes if c["op"] == "lock"}) == 2


async def restart(stack: Stack, **env: str) -> None:
    await stack.processes["producer"].stop_async()
    stack.env.update(env)
    await stack.start_producer()


async def test_acks_and_locks_survive_a_restart_of_every_producer_process(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # A lock long enough to outlast the restart below.
    await restart(stack, SLUICE_PULL_LOCK_S="30")
    users = [unique("restart") for _ in range(4)]
    sub = await subscribe(http, stack, users)
    for n, user in enumerate(users):
        await publish(user, n)
    acked = [await pull(sub) for _ in range(2)]
    for event in acked:
        assert event is not None
        await sdk(event.ack())
    locked = await pull(sub)
    assert locked is not None

    await restart(stack)

    listed = (await sdk(SailhouseClient(KEY).get_events("orders", sub))).events
    assert numbers(listed) == [2, 3]  # acked ones are gone; the locked one is still listed
    last = await pull(sub)
    assert last is not None and last.data["n"] == 3  # not 0 or 1 (acked), nor 2 (still locked)
    assert await pull(sub) is None
    await sdk(SailhouseClient(KEY).nack_message("orders", sub, locked.id))
    again = await pull(sub)
    assert again is not None and again.id == locked.id
