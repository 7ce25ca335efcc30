"""The bench's own instruments: its HTTP client must answer as a client should, its CPU readings add up."""

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from aiohttp import web

from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from bench.common import (
    CpuTimes,
    Http,
    Progress,
    cpu_seconds,
    cpu_shares,
    cpu_us_per_event,
    order_records,
    steal_percent,
    until,
)
from bench.pipeline import core_us_per_event
from tests.support.http import local_server


def server(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AbstractAsyncContextManager[str]:
    return local_server("/echo", handler)


async def test_posts_the_body_and_headers_and_keeps_the_connection() -> None:
    peers: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        answer = {"body": (await request.read()).decode(), "key": request.headers["X-API-Key"]}
        return web.json_response(answer, status=201)

    async with server(echo) as url, Http(url, connections=1) as http:
        for n in range(3):
            status, answer = await http.post("/echo", f"b{n}".encode(), {"X-API-Key": "k"})
            assert (status, answer) == (201, f'{{"body": "b{n}", "key": "k"}}'.encode())
    assert len(peers) == 3 and len(set(peers)) == 1  # one keep-alive connection


async def test_a_connection_the_server_closes_is_replaced() -> None:
    async def closing(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    async with server(closing) as url, Http(url, connections=2) as http:
        assert await http.post("/echo", b"", {}) == (200, b"bye")
        assert await http.post("/echo", b"", {}) == (200, b"bye")


async def test_no_answer_is_a_connection_error() -> None:
    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.1)
        return web.Response(text="never sent")

    async with server(hang_up) as url, Http(url, connections=1) as http:
        with pytest.raises(ConnectionError):
            await http.post("/echo", b"x", {})


def test_steal_is_the_hosts_share_of_all_cpu_time_between_two_readings(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 10 0 5 35 20 0\ncpu0 50 0 25 400 5 0 2 18 10 0\n")
    before = CpuTimes.now(stat)
    stat.write_text("cpu  400 0 150 1100 10 0 5 235 90 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n")
    after = CpuTimes.now(stat)
    assert before == CpuTimes(total=1000, steal=35)
    assert after == CpuTimes(total=1900, steal=235)  # guest time is inside user already
    assert steal_percent(before, after) == "22%"  # 200 of 900 ticks


def test_steal_is_unknown_without_proc_stat(tmp_path: Path) -> None:
    assert CpuTimes.now(tmp_path / "missing") is None
    assert steal_percent(None, CpuTimes(total=10, steal=1)) == "-"
    assert steal_percent(CpuTimes(total=10, steal=1), CpuTimes(total=10, steal=1)) == "-"


def test_the_core_calibration_applies_every_order_and_times_it() -> None:
    schemas = SchemaSet.load(Path("schemas"))
    records, _ = order_records(schemas["event"], 50)
    spec = Catalog.load(Path("topics"))["orders"]
    assert 0 < core_us_per_event(schemas, spec, records) < 1e6


def test_cpu_seconds_are_user_plus_system_time_of_a_proc_stat_file(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # The command name may hold spaces and parentheses; utime and stime are fields 14 and 15.
    stat.write_text(f"4138 (python (x) 3) S 1 2 3 0 -1 4194560 9 0 0 0 {3 * ticks} {ticks} 0 0 20 0 3 0 1\n")
    assert cpu_seconds(stat) == 4.0
    assert cpu_seconds(tmp_path / "missing") is None


def test_cpu_per_event_is_the_difference_over_the_events() -> None:
    assert cpu_us_per_event(1.0, 2.5, 15_000) == "100"
    assert cpu_us_per_event(None, 2.5, 15_000) == "-"
    assert cpu_us_per_event(1.0, None, 15_000) == "-"
    assert cpu_us_per_event(1.0, 2.0, 0) == "-"


def test_cpu_shares_are_each_processs_cpu_since_its_reading_over_the_phase(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {name: tmp_path / name for name in ("worker", "producer", "gone")}
    stats["worker"].write_text(f"1 (python) S 1 2 3 0 -1 0 0 0 0 0 {3 * ticks} {ticks} 0 0 20 0 3 0 1\n")
    stats["producer"].write_text(f"2 (python) S 1 2 3 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 3 0 1\n")
    before = {"worker": 2.0, "producer": None, "gone": 1.0}
    assert cpu_shares(stats, before, 4.0) == {"worker": "50%", "producer": "-", "gone": "-"}


def test_cpu_seconds_reads_this_process() -> None:
    spent = cpu_seconds(Path(f"/proc/{os.getpid()}/stat"))
    assert spent is not None and spent > 0


def test_progress_prints_a_line_at_most_every_interval_with_the_rate_since_the_last() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress("loaded", 100_000, "events", every_s=5, stream=out, clock=lambda: now[0])
    for at, done in ((1.0, 10_000), (5.0, 40_000), (7.0, 60_000), (10.0, 100_000)):
        now[0] = at
        progress.update(done)
    assert out.getvalue().splitlines() == [
        "  loaded 40,000/100,000 events (8,000/s)",
        "  loaded 100,000/100,000 events (12,000/s)",
    ]


async def test_until_returns_once_the_count_reaches_the_target_and_names_the_shortfall_when_it_times_out() -> None:
    seen = [0]

    def count() -> int:
        seen[0] += 1
        return seen[0]

    await until(count, 3, 10, "things")
    assert seen[0] == 3
    with pytest.raises(RuntimeError, match="not done after 0 s: 1 of 2 things"):
        await until(lambda: 1, 2, 0.05, "things")
