"""Slow and idle clients on the real producer: closed on time, a connection cap, and a canary kept answered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.integration
KEY = "slow_key"
IDLE_S, BODY_S, MOST = 2.0, 2.0, 40
LINGER_S = 10.0  # aiohttp's lingering_time
MARGIN_S = 2.5  # the close comes within the limit plus the event loop's timer granularity and this machine's load


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("slow"),
        api_keys=f"{KEY}:acme",
        SLUICE_HTTP_IDLE_TIMEOUT_S=str(IDLE_S),
        SLUICE_HTTP_BODY_TIMEOUT_S=str(BODY_S),
        SLUICE_HTTP_MAX_CONNECTIONS=str(MOST),
    )
    await stack.start_producer()
    yield stack
    stack.stop()


async def closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dribble: bytes = b"") -> float:
    """Seconds until the server closes the connection, sending `dribble` a byte every 0.25 s meanwhile."""
    start = time.monotonic()
    for byte in dribble:
        with contextlib.suppress(ConnectionError):
            writer.write(bytes([byte]))
        try:
            if await asyncio.wait_for(reader.read(1024), 0.25) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - start
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(1024), 30) != b"":
            pass
    return time.monotonic() - start


async def canary(stack: Stack, stop: asyncio.Event) -> list[float]:
    """A well-behaved client asking /health over and over: its latencies."""
    latencies = []
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            start = time.monotonic()
            async with http.get(stack.url + "/health") as response:
                assert response.status == 200
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.1)
    return latencies


async def test_slow_headers_slow_bodies_and_idle_connections_are_closed_while_others_are_served(stack: Stack) -> None:
    stop = asyncio.Event()
    watching = asyncio.ensure_future(canary(stack, stop))
    host, port = "127.0.0.1", stack.producer_port
    slow_headers = b"POST /topics/orders/events HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() * 20
    head = (
        b"POST /topics/orders/events HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{" % KEY.encode()
    )

    async def slow_header_client() -> float:
        reader, writer = await asyncio.open_connection(host, port)
        return await closed_after(reader, writer, slow_headers)

    async def idle_client() -> float:
        reader, writer = await asyncio.open_connection(host, port)
        return await closed_after(reader, writer)

    async def idle_after_an_answer() -> float:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(len(b'{"status":"ok"}'))
        return await closed_after(reader, writer)

    async def stalled_body() -> tuple[bytes, float, float]:
        reader, writer = await asyncio.open_connection(host, port)
        start = time.monotonic()
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"}}"), BODY_S + MARGIN_S)
        answered = time.monotonic() - start
        # aiohttp then reads what is left of the body for at most its lingering time (10 s), so a
        # client still sending gets the answer rather than a reset, and closes.
        await asyncio.wait_for(closed_after(reader, writer), LINGER_S + MARGIN_S)
        return answer, answered, time.monotonic() - start

    try:
        results = await asyncio.gather(
            *(slow_header_client() for _ in range(10)),
            *(idle_client() for _ in range(10)),
            *(idle_after_an_answer() for _ in range(5)),
        )
        answer, body_s, closed_s = await stalled_body()
    finally:
        stop.set()
        latencies = await watching
    assert max(results) < IDLE_S + MARGIN_S, results
    assert min(results) > IDLE_S / 2, results  # closed by the limit, not at once
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"Connection: close" in answer
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
    assert BODY_S <= body_s < BODY_S + MARGIN_S
    assert closed_s < BODY_S + LINGER_S + MARGIN_S
    assert len(latencies) > 10
    assert max(latencies) < 1.0, max(latencies)


async def test_connections_past_the_cap_get_a_503_and_room_comes_back(stack: Stack) -> None:
    held = [await asyncio.open_connection("127.0.0.1", stack.producer_port) for _ in range(MOST)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.producer_port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await asyncio.wait_for(reader.read(), 10)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert b"Retry-After: 1" in refused
        assert orjson.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
    finally:
        for _, held_writer in held:
            held_writer.close()
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 10
        while True:  # the server sees the closes as it reads them: ask until it has
            async with http.get(stack.url + "/health", headers={"Connection": "close"}) as response:
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, "no room after the held connections closed"
