"""The console's routes without a broker or workers: the page, GET /console/stats, its caches and its charts."""

from __future__ import annotations

import asyncio
import fnmatch
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.analytics.aggregate import Aggregate
from app.analytics.spec import TableSpec, WindowSpec
from app.core.tenants import KeyRing, Principal, hash_key
from app.deployment import Deployment
from app.observability import metrics
from app.producer import console
from app.producer.app import create_app
from app.producer.http import Context
from app.producer.publisher import Publisher
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    (tmp_path / "shop.yaml").write_text("tables:\n  - {name: per_type, window: {tumbling: 1h}, aggregate: count}\n")
    (tmp_path / "other.yaml").write_text("description: no tables\n")
    # Nothing listens on port 1: Kafka (the lag) and the workers (the tables) do not answer.
    settings = Settings.from_env(
        {
            "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "SLUICE_ANALYTICS_WORKERS": "http://127.0.0.1:1",
            "SLUICE_ANALYTICS_QUERY_TIMEOUT_S": "0.3",
            "SLUICE_TOPICS_DIR": str(tmp_path),
            "SLUICE_SCHEMAS_DIR": str(REPO / "schemas"),
        }
    )
    deployment = Deployment.load(settings)
    publisher = Publisher("127.0.0.1:1", dead_letter_schema=deployment.schemas["dead_letter"], timeout_s=1)
    keys = KeyRing(
        {
            hash_key("acme_key"): Principal("acme-console"),
            hash_key("other_key"): Principal("acme-console", frozenset({"other"})),
            hash_key("rival_key"): Principal("rival-console"),
        }
    )
    async with TestClient(TestServer(create_app(Context(deployment, keys, publisher)))) as client:
        yield client


async def test_the_page_and_its_files_are_served_without_a_key(client: Client) -> None:
    for path, content_type, marker in (
        ("/console", "text/html", '<script src="console/console.js"'),
        ("/console/console.js", "text/javascript", "effects/stream"),
        ("/console/console.css", "text/css", ":root"),
    ):
        response = await client.get(path)
        assert (response.status, response.content_type) == (200, content_type), path
        assert marker in await response.text(), path
        # The page holds a key: it runs only its own script and talks only to this server.
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_stats_need_a_key(client: Client) -> None:
    response = await client.get("/console/stats")
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (401, "missing_api_key")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_stats_count_the_callers_tenant_only(client: Client) -> None:
    metrics.EVENTS_ACCEPTED.labels("usage", "acme-console").inc(7)
    metrics.EVENTS_REFUSED.labels("usage", "acme-console", "validation").inc(2)
    metrics.EVENTS_ACCEPTED.labels("usage", "rival-console").inc(1000)
    response = await client.get("/console/stats", headers={"Authorization": "Bearer acme_key"})
    body = await response.json()
    assert response.status == 200
    assert (body["tenant"], body["events_accepted"], body["events_refused"]) == ("acme-console", 7, 2)
    assert (body["topics"], body["topic_limited"]) == (["other", "shop"], False)
    assert [table["name"] for table in body["tables"]] == ["per_type"]
    assert isinstance(body["at"], int)
    rival = await (await client.get("/console/stats", headers={"Authorization": "Bearer rival_key"})).json()
    assert (rival["events_accepted"], rival["events_refused"]) == (1000, 0)


async def test_a_key_limited_to_topics_sees_only_their_tables(client: Client) -> None:
    response = await client.get("/console/stats", headers={"X-API-Key": "other_key"})
    body = await response.json()
    assert (body["topics"], body["topic_limited"], body["tables"]) == (["other"], True, [])


async def test_kafka_and_workers_not_answering_leave_the_rest_of_the_answer(client: Client) -> None:
    response = await client.get("/console/stats", headers={"X-API-Key": "acme_key"})
    body = await response.json()
    assert response.status == 200
    assert body["lag"] is None
    (table,) = body["tables"]
    assert (table["rows"], table["keys"]) == ([], 0)
    assert "did not answer" in table["error"]


async def test_recent_computes_once_for_callers_at_the_same_time_and_again_after_its_ttl() -> None:
    now = [0.0]
    recent: console.Recent[str, int] = console.Recent(1.0, clock=lambda: now[0])
    calls = 0
    gate = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    waiting = [asyncio.ensure_future(recent.get("k", compute)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5
    now[0] = 0.9
    assert await recent.get("k", compute) == 1
    now[0] = 1.1
    assert await recent.get("k", compute) == 2
    assert await recent.get("other", compute) == 3  # each key its own value


async def test_a_caller_that_leaves_does_not_cancel_the_others_value() -> None:
    recent: console.Recent[str, str] = console.Recent(10.0)
    gate = asyncio.Event()

    async def compute() -> str:
        await gate.wait()
        return "done"

    leaving = asyncio.ensure_future(recent.get("k", compute))
    staying = asyncio.ensure_future(recent.get("k", compute))
    await asyncio.sleep(0)
    leaving.cancel()
    gate.set()
    assert await staying == "done"
    assert leaving.cancelled()


def test_a_chart_draws_the_busiest_keys_of_the_latest_windows() -> None:
    table = TableSpec("t", "shop", WindowSpec(HOUR_MS, HOUR_MS), "count", None, ("type",), 0, 7 * 24 * HOUR_MS)
    first = 100 * HOUR_MS
    merged: dict[tuple[tuple[str, ...], int], Aggregate] = {}
    for n in range(console.CHART_KEYS + 2):  # key n has n + 1 events in the first window drawn
        merged[(f"k{n}",), first] = Aggregate(count=n + 1)
    merged[("k0",), first - HOUR_MS] = Aggregate(count=1000)  # before the chart: neither drawn nor counted
    drawn = console.chart(table, merged, first, first + HOUR_MS)
    assert drawn["keys"] == console.CHART_KEYS + 2
    keys = {row["key"]["type"] for row in drawn["rows"]}
    assert keys == {f"k{n}" for n in range(2, console.CHART_KEYS + 2)}
    assert all(row["window_start"] == "1970-01-05T04:00:00Z" for row in drawn["rows"])
    assert (drawn["from"], drawn["error"]) == ("1970-01-05T04:00:00Z", None)


def test_the_console_files_ship_in_the_package() -> None:
    """A wheel holds only the files pyproject's package-data names: every file the page needs must match."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["app.producer"]
    folder = REPO / "app" / "producer" / "console_assets"
    files = [path.relative_to(folder.parent).as_posix() for path in folder.iterdir()]
    assert {"console_assets/index.html", "console_assets/console.js", "console_assets/console.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
