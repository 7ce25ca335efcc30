"""Windowed tables on the real broker: posted events -> worker tables -> HTTP queries, against a naive reference."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from app.analytics.spec import parse_tables
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from tests.support.stack import SluiceProcess, Stack, free_port, read_raw_until, read_until
from tests.support.windows import Windows, event, reference

pytestmark = pytest.mark.integration

ALPHA, BETA, GAMMA, DELTA = "alpha_key", "beta_key", "gamma_key", "delta_key"
SHOP = """
description: A test shop.
tables:
  - name: per_type
    window: {tumbling: 10s}
    aggregate: count
    group_by: [type]
    grace: 5s
    retention: 1d
    late_topic: late.shop
  - name: amount_hop
    window: {hopping: 10s, step: 5s}
    aggregate: {sum: data.amount}
    group_by: [type]
    grace: 5s
    retention: 1d
  - name: by_sku
    window: {tumbling: 1m}
    aggregate: count
    group_by: [data.sku]
    grace: 1h
    retention: 1d
  - name: fleeting
    window: {tumbling: 1s}
    aggregate: count
    group_by: [type]
    retention: 5s
"""
TABLES = {t.name: t for t in parse_tables(__import__("yaml").safe_load(SHOP)["tables"], slug="shop", source="test")}


class Cluster:
    """A stack with a producer and one or two workers, all told of both worker ports up front."""

    def __init__(self, stack: Stack, second_port: int) -> None:
        self.stack = stack
        self.second_port = second_port
        self.second: SluiceProcess | None = None

    def start_second_worker(self) -> SluiceProcess:
        env = {
            **self.stack.env,
            "SLUICE_WORKER_PORT": str(self.second_port),
            "SLUICE_DATA_DIR": str(self.stack.workdir / "data2"),
        }
        self.second = SluiceProcess("worker", env, self.stack.workdir / "worker2.log")
        self.second.start()
        return self.second


@pytest.fixture(scope="module")
async def cluster(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    workdir = tmp_path_factory.mktemp("tables")
    topics = workdir / "topics"
    topics.mkdir()
    (topics / "shop.yaml").write_text(SHOP)
    first, second = free_port(), free_port()
    stack = Stack.create(
        kafka_bootstrap,
        workdir,
        api_keys=f"{ALPHA}:alpha,{BETA}:beta,{GAMMA}:gamma,{DELTA}:delta",
        SLUICE_TOPICS_DIR=str(topics),
        SLUICE_WORKER_PORT=str(first),
        SLUICE_ANALYTICS_WORKERS=f"http://127.0.0.1:{first},http://127.0.0.1:{second}",
        SLUICE_ANALYTICS_SWEEP_S="0.5",
        SLUICE_ANALYTICS_QUERY_TIMEOUT_S="3",
        SLUICE_WORKER_SESSION_TIMEOUT_S="6",
    )
    await stack.start_producer()
    stack.start("worker")
    cluster = Cluster(stack, second)
    yield cluster
    if cluster.second is not None:
        cluster.second.stop()
    stack.stop()


async def post(http: aiohttp.ClientSession, stack: Stack, key: str, envelope: Envelope) -> None:
    body = {
        "data": {"user_id": envelope.user_id, **envelope.data},
        "metadata": {"type": envelope.type, "occurred_at": envelope.occurred_at.isoformat()},
    }
    async with http.post(f"{stack.url}/topics/shop/events", json=body, headers={"X-API-Key": key}) as response:
        assert response.status == 201, await response.text()


async def get(
    http: aiohttp.ClientSession,
    stack: Stack,
    api_key: str,
    path: str,
    accept: str = "application/json",
    /,
    **params: str,
) -> tuple[int, Any]:
    headers = {"X-API-Key": api_key, "Accept": accept}
    async with http.get(f"{stack.url}{path}", params=params, headers=headers) as response:
        body = await response.text() if accept == "text/csv" else await response.json()
        return response.status, body


def answer(rows: list[dict[str, Any]]) -> dict[tuple[tuple[str, ...], int], tuple[Any, int]]:
    """(group key, window start ms) -> (value, events) of a JSON answer."""
    return {
        (tuple(row["key"].values()), epoch_ms(datetime.fromisoformat(row["window_start"]))): (
            row["value"],
            row["events"],
        )
        for row in rows
    }


def expected(windows: Windows, aggregation: str) -> dict[tuple[tuple[str, ...], int], tuple[Any, int]]:
    value: Callable[[list[float]], Any] = len if aggregation == "count" else sum
    return {key: (value(values), len(values)) for key, values in windows.items()}


async def eventually(probe: Callable[[], Any], want: Any, *, timeout: float = 60.0, what: str) -> None:
    """Poll `probe` until it returns `want`, or fail with the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last == want:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: wanted {want}, last got {last}")


def base_time() -> datetime:
    """A 10 s boundary ten minutes ago: inside every table's retention, clear of the wall clock."""
    now = datetime.now(UTC) - timedelta(minutes=10)
    return now.replace(second=now.second - now.second % 10, microsecond=0)


async def test_tumbling_and_hopping_windows_match_the_reference_with_late_and_out_of_order_events(
    cluster: Cluster,
) -> None:
    stack = cluster.stack
    b = base_time()
    # One user: one partition, so one stream time, as the reference assumes. Out of order,
    # late inside the grace, late past it (some windows only, for the hopping table), very late.
    script = [(1, "a", 5), (3, "b", 2), (12, "a", 1), (7, "a", 4), (16, "b", 3), (9, "a", 10), (14, "a", 6)]
    script += [(21, "a", 1), (11, "b", 2), (2, "a", 1), (26, "b", 1), (18, "a", 1)]
    events = [event("alpha", "u1", b + timedelta(seconds=s), kind, amount=amount) for s, kind, amount in script]
    async with aiohttp.ClientSession() as http:
        for envelope in events:
            await post(http, stack, ALPHA, envelope)

        async def check(events: list[Envelope]) -> None:
            for name in ("per_type", "amount_hop"):
                table = TABLES[name]
                windows, late = reference(events, table)
                want = expected(windows, table.aggregation)

                async def rows(name: str = name) -> Any:
                    status, body = await get(http, stack, ALPHA, f"/tables/{name}")
                    return answer(body["rows"]) if status == 200 else (status, body)

                await eventually(rows, want, what=f"{name} windows")
                status, body = await get(http, stack, ALPHA, f"/tables/{name}", key="a")
                assert status == 200 and answer(body["rows"]) == {k: v for k, v in want.items() if k[0] == ("a",)}
                status, body = await get(http, stack, ALPHA, "/tables")
                listed = {t["name"]: t for t in body["tables"]}
                assert listed[name]["late_events"] == len(late), name

        await check(events)
        late_per_type = reference(events, TABLES["per_type"])[1]
        assert len(late_per_type) >= 2  # the script does test lateness past the grace
        # Late events are copied whole to the table's late topic (at least once: a replay may copy again).
        records = await read_until(
            stack.bootstrap, stack.topic("late.shop"), lambda rs: len(rs) >= len(late_per_type), describe="late events"
        )
        assert sorted(r["occurred_at"] for r in records) == sorted(e.occurred_at for e in late_per_type)

        # The top keys of one window, and the same answer as CSV.
        window = (b + timedelta(seconds=10)).isoformat()
        windows, _ = reference(events, TABLES["per_type"])
        start = epoch_ms(b) + 10_000
        ranked = sorted(((len(v), k[0]) for k, v in windows.items() if k[1] == start), key=lambda x: (-x[0], x[1]))
        status, body = await get(http, stack, ALPHA, "/tables/per_type/top", window=window, n="1")
        assert status == 200 and [(r["value"], tuple(r["key"].values())) for r in body["rows"]] == ranked[:1]
        status, text = await get(http, stack, ALPHA, "/tables/per_type/top", "text/csv", window=window, n="5")
        lines = text.splitlines()
        assert lines[0] == "type,window_start,window_end,count,events" and len(lines) == 1 + len(ranked)

        # Another tenant sees the table but none of these windows; refusals name the field.
        status, body = await get(http, stack, BETA, "/tables/per_type", key="a")
        assert (status, body["rows"]) == (200, [])
        for path, params, code, field in [
            ("/tables/nope", {}, 404, "name"),
            ("/tables/per_type", {"from": "yesterday"}, 400, "from"),
            ("/tables/per_type/top", {"n": "0"}, 400, "n"),
            ("/tables/amount_hop", {"key": '["a", "b"]'}, 400, "key"),
        ]:
            status, body = await get(http, stack, ALPHA, path, **params)
            assert (status, body["error"]["field"]) == (code, field), body
        status, _ = await get(http, stack, "no_such_key", "/tables")
        assert status == 401

        # A restart: the same query, the same answer (state recovered from RocksDB and the changelog).
        before = {name: (await get(http, stack, ALPHA, f"/tables/{name}"))[1] for name in ("per_type", "amount_hop")}
        worker = stack.processes["worker"]
        worker.stop()
        worker.start()
        for name, body in before.items():

            async def status_of(name: str = name) -> int:
                return (await get(http, stack, ALPHA, f"/tables/{name}"))[0]

            await eventually(status_of, 200, timeout=90, what=f"{name} answers after the restart")
            assert (await get(http, stack, ALPHA, f"/tables/{name}"))[1] == body

        # And events after the restart count once, on top of the recovered windows.
        more = [event("alpha", "u1", b + timedelta(seconds=s), "a", amount=2) for s in (27, 31)]
        for envelope in more:
            await post(http, stack, ALPHA, envelope)
        await check(events + more)


async def test_two_workers_answer_every_key_and_the_top_as_the_reference(cluster: Cluster) -> None:
    stack = cluster.stack
    b = base_time() - timedelta(minutes=5)
    skus = [f"sku-{i}" for i in range(8)]
    events = [
        event("beta", f"user-{u}", b + timedelta(seconds=(u * 7 + i * 13) % 180), "order", sku=skus[(u + i * 3) % 8])
        for u in range(30)
        for i in range(5)
    ]
    table = TABLES["by_sku"]
    windows, late = reference(events, table)  # a grace of an hour: nothing is late in any partition order
    assert not late
    want = expected(windows, "count")
    second = cluster.start_second_worker()
    async with aiohttp.ClientSession() as http:
        semaphore = asyncio.Semaphore(16)

        async def send(envelope: Envelope) -> None:
            async with semaphore:
                await post(http, stack, BETA, envelope)

        await asyncio.gather(*(send(envelope) for envelope in events))

        async def owners() -> int:
            try:
                async with http.get(f"http://127.0.0.1:{cluster.second_port}/analytics/cluster/") as response:
                    body = await response.json()
            except aiohttp.ClientError:
                assert second.running(), second.log_tail()
                return 0
            return sum(1 for parts in body["workers"].values() if parts)

        await eventually(owners, 2, timeout=120, what="both workers holding table partitions")

        async def every_key() -> Any:
            got = {}
            for sku in skus:
                status, body = await get(http, stack, BETA, "/tables/by_sku", key=sku)
                if status != 200:
                    return (status, body)
                got.update(answer(body["rows"]))
            return got

        await eventually(every_key, want, timeout=60, what="every key's windows across two workers")
        assert await owners() == 2  # still both: the answers were gathered from two workers
        for start in sorted({start for _, start in want}):
            ranked = sorted(((v[0], k[0]) for k, v in want.items() if k[1] == start), key=lambda x: (-x[0], x[1]))
            status, body = await get(http, stack, BETA, "/tables/by_sku/top", window=str(start), n="3")
            assert status == 200
            assert [(r["value"], tuple(r["key"].values())) for r in body["rows"]] == ranked[:3]


async def test_retention_deletes_old_windows_from_rocksdb_and_the_changelog(cluster: Cluster) -> None:
    stack = cluster.stack
    async with aiohttp.ClientSession() as http:
        await post(http, stack, GAMMA, event("gamma", "g1", datetime.now(UTC), "ping"))
        changelog = stack.topic("sluice-analytics-changelog")
        prefix = b"w\x00gamma\x00shop\x00fleeting\x00"

        def written_then_deleted(messages: list[Any]) -> bool:
            values = [m.value for m in messages if m.key.startswith(prefix)]
            return bool(values) and values[0] is not None and values[-1] is None

        await read_raw_until(stack.bootstrap, changelog, written_then_deleted, timeout=60, describe="a tombstone")
        status, body = await get(http, stack, GAMMA, "/tables/fleeting")
        assert (status, body["rows"]) == (200, [])


async def test_sluice_query_prints_a_table_csv_and_json(cluster: Cluster) -> None:
    stack = cluster.stack
    b = base_time()
    events = [
        event("gamma", "g2", b + timedelta(seconds=s), kind) for s, kind in [(1, "view"), (2, "view"), (3, "buy")]
    ]
    async with aiohttp.ClientSession() as http:
        for envelope in events:
            await post(http, stack, DELTA, envelope)

        async def counted() -> int:
            status, body = await get(http, stack, DELTA, "/tables/per_type")
            return sum(row["events"] for row in body["rows"]) if status == 200 else -1

        await eventually(counted, 3, what="the three events in per_type")
    env = {**stack.env, "SLUICE_API_KEYS": f"{DELTA}:delta"}
    window = b.isoformat()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app", "query", *args, "--url", stack.url]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    def sluice_query(*args: str) -> str:
        done = run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    start = b.isoformat().replace("+00:00", "Z")
    end = (b + timedelta(seconds=10)).isoformat().replace("+00:00", "Z")
    lines = sluice_query("per_type", "--top", "5", "--window", window).splitlines()
    assert lines[0].split() == ["type", "window_start", "window_end", "count", "events"]
    assert set(lines[1]) == {"-", " "}
    assert [line.split() for line in lines[2:]] == [["view", start, end, "2", "2"], ["buy", start, end, "1", "1"]]
    assert sluice_query("per_type", "--key", "buy", "--format", "csv").splitlines()[1:] == [f"buy,{start},{end},1,1"]
    body = json.loads(sluice_query("per_type", "--key", "view", "--from", window, "--format", "json"))
    assert [row["value"] for row in body["rows"]] == [2]
    failed = run("nope")
    assert failed.returncode == 1 and "no table named 'nope' (name)" in failed.stderr
