"""Every ingest dialect on the real broker: the seed examples verbatim, errors, duplicates, gzip, isolation."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from app.core.tenants import hash_key
from tests.support.stack import Stack, read_until, unique

pytestmark = pytest.mark.integration
SEEDS = Path(__file__).parent / "seeds"
KEY, OTHER, NARROW = "dialect_key", "beta_key", "narrow_key"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("dialects")
    keys = workdir / "keys.yaml"
    keys.write_text(f"keys:\n  - sha256: {hash_key(NARROW)}\n    tenant: acme\n    topics: [orders]\n")
    # The synchronous endpoints are under test here, not their 5 s timeout: a loaded CI machine
    # once took longer for the first effect after the warm-up (a 202 instead of the effect).
    stack = Stack.create(
        kafka_bootstrap,
        workdir,
        api_keys=f"{KEY}:acme,{OTHER}:beta",
        SLUICE_KEYS_FILE=str(keys),
        SLUICE_EFFECT_TIMEOUT_S="30",
    )
    await stack.start_producer()
    stack.start("worker")
    # Wait until the worker has joined and answers, so the synchronous endpoints get effects.
    warm = {"event_id": "warm-up", "user_id": "warm-up", "type": "daily_login"}
    await read_until_answered(stack, warm)
    yield stack
    stack.stop()


async def read_until_answered(stack: Stack, event: dict[str, Any]) -> None:
    for _ in range(30):
        status, _ = await call(stack, "POST", "/api/v1/events", event)
        if status == 200:
            return
    raise TimeoutError("the worker never answered")


async def call(
    stack: Stack,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any],
    headers: dict[str, str] | None = None,
    key: str | None = KEY,
) -> tuple[int, Any]:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None and "Authorization" not in sent:
        sent["X-API-Key"] = key
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, data=data, headers=sent) as response,
    ):
        return response.status, orjson.loads(await response.read())


def seed(name: str) -> bytes:
    return (SEEDS / name).read_bytes()


# The seed documents' own example requests, verbatim, and the response each documents.


async def test_usage_seed_example(stack: Stack) -> None:
    # The seed sends both headers: a bearer token and x-api-key.
    status, body = await call(
        stack, "PUT", "/events", seed("usage.json"), {"Authorization": f"Bearer {KEY}", "x-api-key": KEY}
    )
    assert status == 200
    assert body == {
        "validEvents": [
            {
                "name": "api_call",
                "timestamp": "2026-04-14T12:00:00Z",
                "customerAlias": "customer-123",
                "ref": "evt_abc123",
                "data": {"endpoint": "/users", "method": "GET"},
            }
        ],
        "invalidEvents": [],
    }


async def test_analytics_seed_example(stack: Stack) -> None:
    assert await call(stack, "POST", "/ingest", seed("analytics.json")) == (
        200,
        {"status": "success", "eventId": "evt_123456789"},
    )


async def test_analytics_documented_error(stack: Stack) -> None:
    event = {**orjson.loads(seed("analytics.json")), "event_time": "yesterday"}
    status, body = await call(stack, "POST", "/ingest", event)
    assert status == 400
    assert body["error"] == "Invalid event"
    assert [(d["field"], d["code"]) for d in body["details"]] == [("event_time", "validation.format")]


async def test_gamification_seed_examples_answer_with_their_effects(stack: Stack) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    status, body = await call(stack, "POST", "/api/v1/events", seed("gamification.json"), bearer)
    assert status == 200, body
    assert body == {
        "event_id": "evt_01HXYZ",
        "coins": 10,
        "badges_awarded": ["first_lesson"],
        "badges_ready": [],
        "tokens": [],
        "evolution_ready": False,
        "streak_milestones": [],
        "replayed": False,
    }
    status, body = await call(stack, "POST", "/api/v1/events/batch", seed("gamification_batch.json"), bearer)
    assert status == 200, body
    assert [(r["event_id"], r["coins"], r["badges_awarded"]) for r in body["results"]] == [
        ("e1", 10, []),
        ("e2", 5, []),
    ]


async def test_gamification_duplicate_returns_the_cached_effect_replayed(stack: Stack) -> None:
    event = {"event_id": unique("g"), "user_id": unique("learner"), "type": "lesson_completed"}
    status, first = await call(stack, "POST", "/api/v1/events", event)
    assert (status, first["coins"], first["replayed"]) == (200, 10, False)
    status, again = await call(stack, "POST", "/api/v1/events", event)
    assert status == 200
    assert again == {**first, "replayed": True}
    later = {**event, "event_id": unique("g")}
    status, third = await call(stack, "POST", "/api/v1/events", later)
    assert (status, third["coins"], third["badges_awarded"]) == (200, 10, [])  # the duplicate applied nothing


async def test_nothing_matched_says_why(stack: Stack) -> None:
    status, body = await call(stack, "POST", "/api/v1/events", {"user_id": unique("u"), "type": "task_assigned"})
    assert (status, body["debug_reason"]) == (200, "no_matching_rules")


async def test_segment_seed_example(stack: Stack) -> None:
    assert await call(stack, "POST", "/api/events", seed("segment.json"), {"X-Api-Key": KEY}, key=None) == (
        200,
        {"success": True, "processed": 1, "failed": 0},
    )


async def test_pubsub_and_cloudevents_structured(stack: Stack) -> None:
    status, body = await call(stack, "POST", "/topics/orders/events", {"data": {"user_id": "u1"}})
    assert status == 201 and body["id"].startswith("evt_")
    event = {"specversion": "1.0", "id": "ce-1", "source": "/shop", "type": "order_placed", "subject": "u1"}
    status, body = await call(
        stack, "POST", "/cloudevents/orders", event, {"Content-Type": "application/cloudevents+json"}
    )
    assert (status, body) == (202, {"id": "/shop#ce-1"})


async def test_cloudevents_binary_and_batched(stack: Stack) -> None:
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/shop",
        "ce-type": "order_placed",
        "ce-subject": "u2",
    }
    assert await call(stack, "POST", "/cloudevents/orders", {"sku": "x"}, headers) == (202, {"id": "/shop#b-1"})
    batch = [
        {"specversion": "1.0", "id": "m-1", "source": "/shop", "type": "order_placed", "subject": "u3"},
        {"specversion": "0.3", "id": "m-2", "source": "/shop", "type": "order_placed", "subject": "u3"},
    ]
    status, body = await call(
        stack, "POST", "/cloudevents/orders", batch, {"Content-Type": "application/cloudevents-batch+json"}
    )
    assert status == 207
    assert body["accepted"] == ["/shop#m-1"]
    assert [r["index"] for r in body["rejected"]] == [1]


# Partial acceptance, atomic batches, and the dead-letter record of a refused event.


async def test_usage_partial_acceptance_keeps_the_refused_event(stack: Stack) -> None:
    good = {"name": "api_call", "timestamp": "2026-04-14T12:00:00Z", "customerAlias": "c1", "ref": unique("ref")}
    bad = {"name": "api_call", "timestamp": "not a time", "customerAlias": "c1", "ref": unique("bad")}
    status, body = await call(stack, "PUT", "/events", {"events": [good, bad]})
    assert status == 200
    assert [e["ref"] for e in body["validEvents"]] == [good["ref"]]
    (invalid,) = body["invalidEvents"]
    assert invalid["event"] == bad and invalid["error"].startswith("timestamp:")
    letters = await read_until(
        stack.bootstrap,
        stack.topic("dlq.acme"),
        lambda rs: any(orjson.loads(r["body"]).get("ref") == bad["ref"] for r in rs if r["body"].startswith(b"{")),
        timeout=30,
        describe="dead letter of the refused usage event",
    )
    letter = next(r for r in letters if r["body"].startswith(b"{") and orjson.loads(r["body"]).get("ref") == bad["ref"])
    assert (letter["field"], letter["code"], letter["source"]) == ("timestamp", "validation.format", "PUT /events")


async def test_segment_partial_acceptance(stack: Stack) -> None:
    good = orjson.loads(seed("segment.json"))["batch"][0] | {"messageId": unique("msg")}
    bad = {**good, "messageId": unique("msg"), "type": "screen"}
    status, body = await call(stack, "POST", "/api/events", {"batch": [good, bad], "sentAt": "2025-01-15T10:30:05Z"})
    assert status == 200
    assert (body["success"], body["processed"], body["failed"]) == (False, 1, 1)
    assert [e["index"] for e in body["errors"]] == [1]


async def test_gamification_batch_is_all_or_nothing(stack: Stack) -> None:
    user = unique("learner")
    ids = [unique("g") for _ in range(3)]
    events = [{"event_id": i, "user_id": user, "type": "lesson_completed"} for i in ids]
    events[2]["type"] = "not_a_registered_type"
    status, body = await call(stack, "POST", "/api/v1/events/batch", {"events": events})
    assert status == 400
    assert body["error"]["code"] == "event_type_not_registered"
    assert body["error"]["field"] == "events[2].type"
    sentinel = unique("sentinel")
    assert (
        await call(stack, "POST", "/api/v1/events", {"event_id": sentinel, "user_id": user, "type": "daily_login"})
    )[0] == 200
    # Same user, same partition: once the sentinel is on the topic, any write of the batch would be too.
    records = await read_until(
        stack.bootstrap, stack.topic("events.gamification"), lambda rs: any(r["id"] == sentinel for r in rs)
    )
    assert not {r["id"] for r in records} & set(ids)


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"user_id": "u", "type": "lesson_completed", "audience": "teacher"}, "unknown_audience"),
        ({"user_id": "u", "type": "shopping"}, "event_type_not_registered"),
        ({"user_id": "u", "type": "lesson_completed", "extra": 1}, "validation.unknown"),
        ({"type": "lesson_completed"}, "validation.required"),
    ],
)
async def test_gamification_errors(stack: Stack, event: dict[str, Any], code: str) -> None:
    status, body = await call(stack, "POST", "/api/v1/events", event)
    assert status == 400
    assert body["error"]["code"] == code


# Duplicates: each dialect's own id deduplicates; the worker applies an id once.


DUPLICATES = {
    "usage": (
        "PUT",
        "/events",
        lambda user, ref: {
            "events": [{"name": "api_call", "timestamp": "2026-04-14T12:00:00Z", "customerAlias": user, "ref": ref}]
        },
        lambda ref: ref,
    ),
    "analytics": (
        "POST",
        "/ingest",
        lambda user, ref: {**orjson.loads(seed("analytics.json")), "user_id": user, "event_id": ref},
        lambda ref: ref,
    ),
    "gamification": (
        "POST",
        "/api/v1/events",
        lambda user, ref: {"event_id": ref, "user_id": user, "type": "quiz_passed"},
        lambda ref: ref,
    ),
    "pubsub": (
        "POST",
        "/topics/orders/events",
        lambda user, ref: {"data": {"user_id": user}, "metadata": {"event_id": ref}},
        lambda ref: ref,
    ),
    "segment": (
        "POST",
        "/api/events",
        lambda user, ref: {
            "batch": [orjson.loads(seed("segment.json"))["batch"][0] | {"userId": user, "messageId": ref}],
            "sentAt": "2025-01-15T10:30:05Z",
        },
        lambda ref: ref,
    ),
}


@pytest.mark.parametrize("dialect", sorted(DUPLICATES))
async def test_duplicates_by_each_dialects_id_yield_one_effect(stack: Stack, dialect: str) -> None:
    method, path, make, event_id = DUPLICATES[dialect]
    user, ref, later = unique("dup-user"), unique("dup"), unique("later")
    for _ in range(2):
        status, _ = await call(stack, method, path, make(user, ref))
        assert status < 300
    assert (await call(stack, method, path, make(user, later)))[0] < 300
    effects = await read_until(
        stack.bootstrap,
        stack.topic("effects"),
        lambda rs: any(r["event_id"] == event_id(later) for r in rs),
        describe=f"{dialect} effect after the duplicate",
    )
    assert [r["event_id"] for r in effects].count(event_id(ref)) == 1


async def test_cloudevents_duplicates_by_source_and_id(stack: Stack) -> None:
    user, ce_id = unique("ce-user"), unique("ce")
    headers = {"Content-Type": "application/cloudevents+json"}
    event = {"specversion": "1.0", "id": ce_id, "source": "/a", "type": "order_placed", "subject": user}
    for source in ("/a", "/a", "/b"):
        assert (await call(stack, "POST", "/cloudevents/orders", event | {"source": source}, headers))[0] == 202
    later = event | {"id": unique("ce-later")}
    assert (await call(stack, "POST", "/cloudevents/orders", later, headers))[0] == 202
    effects = await read_until(
        stack.bootstrap, stack.topic("effects"), lambda rs: any(r["event_id"] == f"/a#{later['id']}" for r in rs)
    )
    ids = [r["event_id"] for r in effects]
    assert (ids.count(f"/a#{ce_id}"), ids.count(f"/b#{ce_id}")) == (1, 1)


# gzip, limits, isolation.


async def test_gzip_bodies_are_accepted(stack: Stack) -> None:
    status, body = await call(
        stack, "POST", "/ingest", gzip.compress(seed("analytics.json")), {"Content-Encoding": "gzip"}
    )
    assert (status, body["status"]) == (200, "success")


async def test_gzip_bomb_is_capped_on_the_inflated_size(stack: Stack) -> None:
    bomb = gzip.compress(b'{"events": [' + b" " * 20_000_000 + b"]}")
    assert len(bomb) < 100_000
    status, body = await call(stack, "PUT", "/events", bomb, {"Content-Encoding": "gzip"})
    assert status == 413
    assert body["error"]["field"] == "body"


async def test_usage_payload_over_256_kb_is_413(stack: Stack) -> None:
    event = {
        "name": "api_call",
        "timestamp": "2026-04-14T12:00:00Z",
        "customerAlias": "c",
        "ref": "r",
        "data": {"x": "y" * 300_000},
    }
    status, body = await call(stack, "PUT", "/events", {"events": [event]})
    assert status == 413
    assert "262144" in body["error"]["message"]


async def test_a_key_limited_to_topics_gets_403_elsewhere(stack: Stack) -> None:
    status, body = await call(stack, "PUT", "/events", seed("usage.json"), key=NARROW)
    assert status == 403
    assert body["error"]["code"] == "topic_forbidden"
    assert (await call(stack, "POST", "/topics/orders/events", {"data": {"user_id": "u"}}, key=NARROW))[0] == 201


async def test_the_tenant_comes_from_the_key_never_the_body(stack: Stack) -> None:
    user = unique("spoof")
    body = {"data": {"user_id": user, "tenant": "acme"}, "metadata": {"tenant": "acme"}}
    status, answer = await call(stack, "POST", "/topics/orders/events", body, key=OTHER)
    assert status == 201
    records = await read_until(
        stack.bootstrap, stack.topic("events.orders"), lambda rs: any(r["id"] == answer["id"] for r in rs)
    )
    (record,) = [r for r in records if r["id"] == answer["id"]]
    assert record["tenant"] == "beta"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/events"),
        ("POST", "/ingest"),
        ("POST", "/ingest/batch"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v1/events/batch"),
        ("POST", "/topics/orders/events"),
        ("POST", "/api/events"),
    ],
)
@pytest.mark.parametrize(
    ("payload", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"", "application/json", 400),
    ],
)
async def test_malformed_requests_get_a_reason_on_every_endpoint(
    stack: Stack, method: str, path: str, payload: bytes, content_type: str, status: int
) -> None:
    got, body = await call(stack, method, path, payload, {"Content-Type": content_type})
    assert got == status, body
    assert body["error"]
