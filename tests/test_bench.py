"""The bench's own HTTP client: what it measures with must answer as a client should."""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from aiohttp import web

from app.bench import Http
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
