"""The noisy-neighbour benchmark: tenant B's request latency alone, and while tenant A sends at 10x its limit."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from app.core.tenants import hash_key
from app.settings import Settings
from bench.common import Http, Progress, bench_broker, bench_namespace, percentile_ms, producer_process

NOISY, QUIET = "bench_noisy_key", "bench_quiet_key"
A_REQUESTS_PER_S, A_EVENTS_PER_S = 50, 1000  # tenant A's limits; it sends at ten times them
BATCH = 20  # events per request, both tenants


def _body() -> bytes:
    stamp = "2026-01-01T00:00:00Z"
    events = [
        {"name": "api_call", "timestamp": stamp, "customerAlias": "c1", "ref": uuid.uuid4().hex} for _ in range(BATCH)
    ]
    return orjson.dumps({"events": events})


async def _steady(
    http: Http, key: str, per_s: float, seconds: float, what: str | None = None
) -> tuple[list[float], dict[int, int]]:
    """Requests at a fixed rate, each on time however long the others take: latencies and status counts.
    With `what`, progress on stderr as it goes."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    # Bodies made before the clock starts: the load generator shares the cores it measures.
    bodies = [_body() for _ in range(int(per_s * seconds))]

    async def one(body: bytes) -> None:
        start = time.perf_counter()
        status, _ = await http.post("/events", body, headers)  # PUT's twin, as the vendor's SDK sends it
        latencies.append(time.perf_counter() - start)
        statuses[status] = statuses.get(status, 0) + 1

    tasks = []
    progress = Progress(what or "", len(bodies), "requests")
    begin = time.perf_counter()
    for n, body in enumerate(bodies):
        delay = begin + n / per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if what is not None:
            progress.update(n)
        tasks.append(asyncio.ensure_future(one(body)))
    await asyncio.gather(*tasks)
    return latencies, statuses


async def _flood(url: str, key: str, per_s: float, seconds: float) -> dict[int, int]:
    """Tenant A's load from a process of its own, so that its client's work does not delay B's in this one."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.tenants", url, key, str(per_s), str(seconds), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tenant A's load generator exited {process.returncode}")
    return {int(status): count for status, count in orjson.loads(out).items()}


async def _flood_here(url: str, key: str, per_s: float, seconds: float) -> None:
    async with Http(url, 64) as http:
        _, statuses = await _steady(http, key, per_s, seconds)
    print(orjson.dumps({str(status): count for status, count in statuses.items()}).decode())


async def run(settings: Settings, seconds: float, rounds: int, quiet_per_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        keys = workdir / "keys.yaml"
        keys.write_text(
            "keys:\n"
            f"  - {{sha256: {hash_key(NOISY)}, tenant: alpha}}\n"
            f"  - {{sha256: {hash_key(QUIET)}, tenant: beta}}\n"
            f"tenants:\n  alpha: {{requests_per_s: {A_REQUESTS_PER_S}, events_per_s: {A_EVENTS_PER_S}}}\n"
        )
        async with bench_broker(settings, workdir) as bootstrap:
            _, env = await bench_namespace(settings, bootstrap)
            env = {**env, "SLUICE_KEYS_FILE": str(keys), "SLUICE_API_KEYS": ""}
            async with producer_process(env, workdir) as url, Http(url, 64) as quiet:
                print(
                    f"bench tenants: {os.cpu_count()} cores, tenant B at {quiet_per_s:g} requests/s of {BATCH} events; "
                    f"tenant A limited to {A_REQUESTS_PER_S} requests/s and {A_EVENTS_PER_S} events/s, sending "
                    f"{10 * A_REQUESTS_PER_S} requests/s; {seconds:g} s a phase, {rounds} rounds, alternating",
                    flush=True,
                )
                await _steady(quiet, QUIET, quiet_per_s, 2)  # warm connections and caches, not counted
                # A at no load, at its limit and at ten times it: what A's excess costs B is the last
                # against the middle; the first shows what A's allowed traffic costs on these cores.
                phases = {"B alone": 0, "B beside A at its limit": 1, "B beside A at 10x": 10}
                seen: dict[str, list[float]] = {name: [] for name in phases}
                print(f"{'round':>5}  {'phase':<26} {'B p50 ms':>9} {'B p99 ms':>9}  A's answers", flush=True)
                for number in range(1, rounds + 1):
                    for name, times in phases.items():
                        steady = _steady(quiet, QUIET, quiet_per_s, seconds, f"round {number}, {name}: sent")
                        if times:
                            (latencies, _), a_statuses = await asyncio.gather(
                                steady, _flood(url, NOISY, times * A_REQUESTS_PER_S, seconds)
                            )
                        else:
                            (latencies, _), a_statuses = await steady, {}
                        seen[name] += latencies
                        print(
                            f"{number:>5}  {name:<26} {percentile_ms(latencies, 0.5):>9.1f} "
                            f"{percentile_ms(latencies, 0.99):>9.1f}  {dict(sorted(a_statuses.items())) or ''}",
                            flush=True,
                        )
                p99 = {name: percentile_ms(latencies, 0.99) for name, latencies in seen.items()}
                ratio = p99["B beside A at 10x"] / p99["B beside A at its limit"]
                print(
                    "B's p99 over all rounds: "
                    + ", ".join(f"{name.removeprefix('B ')} {value:.1f} ms" for name, value in p99.items())
                    + f"; A at 10x against A at its limit: {ratio:.2f}x"
                    + " (target at most 1.20x)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":  # tenant A's load generator: URL KEY REQUESTS_PER_S SECONDS
    asyncio.run(_flood_here(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
