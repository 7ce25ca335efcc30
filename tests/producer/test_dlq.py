"""GET /dlq and POST /dlq/replay on the real broker: a tenant's refused input, listed, paged and replayed once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from app.core.tenants import hash_key
from tests.support.stack import Stack, read_until, unique
from tests.worker.test_crash import wait_ready

pytestmark = pytest.mark.integration
ACME, BETA, USAGE_ONLY = "dlq_acme", "dlq_beta", "dlq_usage_only"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("dlq")
    keys = workdir / "keys.yaml"
    keys.write_text(f"keys:\n  - {{sha256: {hash_key(USAGE_ONLY)}, tenant: acme, topics: [usage]}}\n")
    stack = Stack.create(kafka_bootstrap, workdir, api_keys=f"{ACME}:acme,{BETA}:beta", SLUICE_KEYS_FILE=str(keys))
    stack.start("worker")  # starts while the producer does; the replay test waits for it
    await stack.start_producer()
    yield stack
    stack.stop()


async def call(
    stack: Stack, method: str, path: str, body: Any = None, *, key: str = ACME, raw: bytes | None = None
) -> tuple[int, Any]:
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    data = raw if raw is not None else None if body is None else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


async def listed(stack: Stack, key: str = ACME, **params: str) -> list[dict[str, Any]]:
    """Every dead letter GET /dlq lists with these parameters, page by page."""
    found: list[dict[str, Any]] = []
    after: dict[str, str] = {}
    while True:
        query = "&".join(f"{name}={value}" for name, value in {**params, **after}.items())
        status, page = await call(stack, "GET", f"/dlq?{query}", key=key)
        assert status == 200, page
        found.extend(page["records"])
        if not page["more"]:
            return found
        after = {"after": page["cursor"]}


def marked(records: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    return [r for r in records if marker in orjson.dumps(r["body"]).decode()]


async def refuse_orders(stack: Stack, marker: str, count: int, key: str = ACME) -> None:
    """`count` events without a user id, refused by POST /topics/orders/events."""
    for n in range(count):
        status, _ = await call(stack, "POST", "/topics/orders/events", {"data": {"marker": marker, "n": n}}, key=key)
        assert status == 400


async def test_refused_requests_are_listed_with_their_reasons_and_filtered_by_reason(stack: Stack) -> None:
    marker = unique("reasons")
    await refuse_orders(stack, marker, 2)
    status, _ = await call(stack, "POST", "/topics/orders/events", {"data": {"user_id": "u"}, "marker": marker})
    assert status == 400  # an unknown field
    status, _ = await call(stack, "POST", "/topics/orders/events", raw=b'{"data": "' + marker.encode())
    assert status == 400  # not JSON

    everything = marked(await listed(stack), marker)
    assert [(r["code"], r["field"]) for r in everything] == [
        ("validation.required", "data.user_id"),
        ("validation.required", "data.user_id"),
        ("validation.unknown", "marker"),
        ("malformed_body", "body"),
    ]
    first = everything[0]
    assert first["body"] == {"data": {"marker": marker, "n": 0}}
    assert (first["stage"], first["source"], first["topic"]) == (
        "producer",
        "POST /topics/{topic_slug}/events",
        "orders",
    )
    assert (first["content_type"], first["message"]) == (
        "application/json",
        "a user id is required in data.user_id or metadata.user_id",
    )
    assert everything[3]["body"] == '{"data": "' + marker and everything[3]["body_encoding"] == "text"

    by_prefix = marked(await listed(stack, reason="validation"), marker)
    assert [r["code"] for r in by_prefix] == ["validation.required", "validation.required", "validation.unknown"]
    assert [r["id"] for r in marked(await listed(stack, reason="malformed_body"), marker)] == [everything[3]["id"]]


async def test_a_time_range_lists_what_was_received_in_it(stack: Stack) -> None:
    marker = unique("range")
    await refuse_orders(stack, marker, 5)
    mine = marked(await listed(stack), marker)
    start, end = mine[1]["received_at"], mine[3]["received_at"]
    in_range = await listed(stack, **{"from": start, "to": end})
    assert [r["id"] for r in marked(in_range, marker)] == [r["id"] for r in mine[1:4]]
    assert all(start <= r["received_at"] <= end for r in in_range)
    assert marked(await listed(stack, **{"from": "2099-01-01T00:00:00Z"}), marker) == []


async def test_times_at_the_calendars_edges_are_answered(stack: Stack) -> None:
    await refuse_orders(stack, unique("edges"), 1)
    assert len(await listed(stack, **{"from": "0001-01-01T00:00:00Z"})) == len(await listed(stack))
    assert await listed(stack, to="1900-01-01T00:00:00Z") == []
    assert await listed(stack, **{"from": "9999-12-31T23:59:59Z", "to": "9999-12-31T23:59:59Z"}) == []


async def test_pages_follow_each_other_by_cursor_oldest_and_newest_first(stack: Stack) -> None:
    await refuse_orders(stack, unique("pages"), 5)
    whole = await listed(stack, limit="1000")
    assert len(whole) >= 5
    paged = await listed(stack, limit="2")
    assert [r["id"] for r in paged] == [r["id"] for r in whole]
    newest = await listed(stack, limit="3", order="newest")
    assert [r["id"] for r in newest] == [r["id"] for r in reversed(whole)]

    status, latest = await call(stack, "GET", "/dlq?limit=2&order=newest")
    assert status == 200 and [r["id"] for r in latest["records"]] == [r["id"] for r in whole[-1:-3:-1]]
    # A cursor at the end lists what comes after it, once it comes.
    status, end = await call(stack, "GET", "/dlq?limit=1000")
    assert status == 200 and not end["more"]
    marker = unique("later")
    await refuse_orders(stack, marker, 1)
    status, later = await call(stack, "GET", f"/dlq?after={end['cursor']}")
    assert status == 200 and [r["body"]["data"]["marker"] for r in later["records"]] == [marker]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("from=yesterday", "from"),
        ("from=2026-05-04T10:00:00Z&to=2026-05-04T09:00:00Z", "to"),
        ("order=random", "order"),
        ("after=garbage!", "after"),
        ("reason=", "reason"),
        ("tenant=beta", "tenant"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(stack: Stack, query: str, field: str) -> None:
    status, body = await call(stack, "GET", f"/dlq?{query}")
    assert (status, body["error"]["field"]) == (400, field)


async def test_a_cursor_past_the_end_is_refused(stack: Stack) -> None:
    from app.core.dlq import OLDEST, Cursor

    status, body = await call(stack, "GET", f"/dlq?after={Cursor(OLDEST, {0: 10**9}).encode()}")
    assert (status, body["error"]["field"], body["error"]["code"]) == (400, "after", "invalid_cursor")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filter": {"from": "soon"}}, "filter.from"),
        ({"filter": {"ids": ["0:1", "x"]}}, "filter.ids[1]"),
        ({"filter": {"reason": "x"}, "patches": {}}, "patches"),
        ({"dry_run": 1}, "dry_run"),
    ],
)
async def test_a_bad_replay_is_a_400_naming_the_field(stack: Stack, body: Any, field: str) -> None:
    status, answer = await call(stack, "POST", "/dlq/replay", body)
    assert (status, answer["error"]["field"]) == (400, field)


async def test_a_patched_replay_has_its_effect_once_however_often_it_is_replayed(stack: Stack) -> None:
    marker = unique("replay")
    await refuse_orders(stack, marker, 1)
    (letter,) = marked(await listed(stack), marker)
    replay = {"filter": {"ids": [letter["id"]]}, "patch": {"data": {"user_id": marker}}}

    status, dry = await call(stack, "POST", "/dlq/replay", {**replay, "dry_run": True})
    assert (status, dry) == (200, {"replayed": 1, "still_refused": [], "matched": 1})
    status, unpatched = await call(stack, "POST", "/dlq/replay", {"filter": {"ids": [letter["id"]]}})
    assert (status, unpatched["replayed"], unpatched["matched"]) == (200, 0, 1)
    assert [(r["id"], r["code"], r["field"]) for r in unpatched["still_refused"]] == [
        (letter["id"], "validation.required", "data.user_id")
    ]
    for _ in range(2):
        status, done = await call(stack, "POST", "/dlq/replay", replay)
        assert (status, done) == (200, {"replayed": 1, "still_refused": [], "matched": 1})
    # A later event of the same user is applied after both replays (one partition, in order).
    status, sentinel = await call(stack, "POST", "/topics/orders/events", {"data": {"user_id": marker}})
    assert status == 201

    await wait_ready(stack.processes["worker"], 0)
    effects = await read_until(
        stack.bootstrap,
        stack.topic("effects"),
        lambda records: any(r["event_id"] == sentinel["id"] for r in records),
        timeout=60,
        describe="the effect of the event sent after both replays",
    )
    replayed = [r for r in effects if r["user_id"] == marker and r["event_id"] != sentinel["id"]]
    assert len(replayed) == 1, replayed
    assert replayed[0]["event_id"].startswith("evt_")
    # The dry run published nothing: the topic holds the replayed event once per replay, and the sentinel.
    events = await read_until(
        stack.bootstrap,
        stack.topic("events.orders"),
        lambda records: any(r["id"] == sentinel["id"] for r in records),
        timeout=30,
    )
    assert [r["id"] for r in events if r["user_id"] == marker] == [replayed[0]["event_id"]] * 2 + [sentinel["id"]]


async def test_a_refused_event_of_a_batch_is_replayed_patched_onto_its_topic(stack: Stack) -> None:
    marker = unique("usage")
    good = {"name": "api_call", "timestamp": "2026-05-04T10:00:00Z", "customerAlias": "c1", "ref": f"{marker}-1"}
    bad = {"name": "api_call", "timestamp": "yesterday", "customerAlias": "c1", "ref": f"{marker}-2"}
    status, answer = await call(stack, "PUT", "/events", {"events": [good, bad]})
    assert status == 200 and len(answer["invalidEvents"]) == 1
    (letter,) = marked(await listed(stack, reason="validation.format"), marker)
    assert (letter["source"], letter["topic"], letter["body"]) == ("PUT /events", "usage", bad)

    status, done = await call(
        stack,
        "POST",
        "/dlq/replay",
        {"filter": {"ids": [letter["id"]]}, "patch": {"timestamp": "2026-05-04T10:00:01Z"}},
    )
    assert (status, done) == (200, {"replayed": 1, "still_refused": [], "matched": 1})
    events = await read_until(
        stack.bootstrap,
        stack.topic("events.usage"),
        lambda records: any(r["id"] == f"{marker}-2" for r in records),
        timeout=30,
    )
    (event,) = [r for r in events if r["id"] == f"{marker}-2"]
    assert (event["tenant"], event["topic"], event["type"], event["dialect"]) == ("acme", "usage", "api_call", "usage")


async def test_a_batch_refused_whole_is_patched_event_by_event(stack: Stack) -> None:
    marker = unique("gamification")
    batch = {
        "events": [
            {"event_id": f"{marker}-1", "user_id": marker, "type": "lesson_completed", "mood": "keen"},
            {"event_id": f"{marker}-2", "user_id": marker, "type": "lesson_started"},
        ]
    }
    status, _ = await call(stack, "POST", "/api/v1/events/batch", batch)
    assert status == 400  # all or nothing: the first event's unknown field refuses both
    (letter,) = marked(await listed(stack), marker)
    assert (letter["field"], letter["body"]) == ("events[0].mood", batch)

    status, done = await call(
        stack, "POST", "/dlq/replay", {"filter": {"ids": [letter["id"]]}, "patch": {"mood": None}}
    )
    assert (status, done) == (200, {"replayed": 2, "still_refused": [], "matched": 1})
    events = await read_until(
        stack.bootstrap,
        stack.topic("events.gamification"),
        lambda records: sum(r["user_id"] == marker for r in records) == 2,
        timeout=30,
    )
    assert [(r["id"], r["type"]) for r in events if r["user_id"] == marker] == [
        (f"{marker}-1", "lesson_completed"),
        (f"{marker}-2", "lesson_started"),
    ]


async def test_a_replay_by_reason_and_time_goes_page_by_page(stack: Stack) -> None:
    marker = unique("bulk")
    await refuse_orders(stack, marker, 3)
    mine = marked(await listed(stack), marker)
    chosen = {"reason": "validation.required", "from": mine[0]["received_at"], "to": mine[2]["received_at"]}
    pages, after = [], None
    while True:
        status, page = await call(
            stack, "POST", "/dlq/replay", {"filter": chosen, "dry_run": True, "limit": 2, "after": after}
        )
        assert status == 200
        pages.append(page)
        if not page["more"]:
            break
        after = page["cursor"]
    assert [p["matched"] for p in pages] == [2, 1]
    # Unpatched, each is still refused, once: the pages do not overlap.
    assert [r["id"] for p in pages for r in p["still_refused"]] == [r["id"] for r in mine]


async def test_another_tenant_sees_and_replays_none_of_them(stack: Stack) -> None:
    marker = unique("isolated")
    await refuse_orders(stack, marker, 2)
    await refuse_orders(stack, unique("beta"), 1, key=BETA)
    acme = marked(await listed(stack), marker)
    assert len(acme) == 2

    beta = await listed(stack, key=BETA)
    assert len(beta) == 1 and marked(beta, marker) == []
    status, done = await call(
        stack, "POST", "/dlq/replay", {"filter": {"ids": [r["id"] for r in acme]}, "dry_run": True}, key=BETA
    )
    # The same positions on beta's topic hold beta's own letter, or nothing: never acme's.
    assert status == 200 and {r["id"] for r in done["still_refused"]} <= {beta[0]["id"]}
    assert done["matched"] == len(done["still_refused"])
    status, everything = await call(stack, "POST", "/dlq/replay", {"dry_run": True}, key=BETA)
    assert status == 200 and everything["matched"] == 1


async def test_a_topic_limited_key_sees_and_replays_only_its_topics(stack: Stack) -> None:
    marker = unique("limited")
    await refuse_orders(stack, marker, 1)
    usage = {"events": [{"name": "x", "timestamp": "2026-05-04T10:00:00Z", "customerAlias": marker}]}
    status, _ = await call(stack, "PUT", "/events", usage)
    assert status == 200
    # A refusal that names no topic: kept, but for a key limited to topics it belongs to none of them.
    status, _ = await call(stack, "POST", "/rules/simulate", {"topic": marker})
    assert status == 404

    full = marked(await listed(stack), marker)
    assert [r["topic"] for r in full] == ["orders", "usage", None]
    limited = marked(await listed(stack, key=USAGE_ONLY), marker)
    assert [r["id"] for r in limited] == [full[1]["id"]]

    status, done = await call(
        stack, "POST", "/dlq/replay", {"filter": {"ids": [r["id"] for r in full]}, "dry_run": True}, key=USAGE_ONLY
    )
    assert status == 200 and done["matched"] == 1
    assert [r["id"] for r in done["still_refused"]] == [full[1]["id"]]  # ref is still missing
    assert done["still_refused"][0]["field"] == "ref"
