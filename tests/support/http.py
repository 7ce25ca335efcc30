"""A small aiohttp server on 127.0.0.1 for tests that need something to answer HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Self

from aiohttp import web

from tests.support.stack import free_port


@asynccontextmanager
async def local_server(path: str, handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """POSTs to `path` go to `handler`; yields the server's base URL (a free port)."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class LocalReceiver:
    """A receiver on a free port of 127.0.0.1: POSTs to PATH go to `handle`, which subclasses write."""

    PATH = "/hook"

    def __init__(self) -> None:
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.PATH}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post(self.PATH, self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError
