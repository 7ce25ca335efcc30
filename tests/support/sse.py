"""A small Server-Sent Events client for tests: open a stream, read events until a condition, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass(frozen=True, slots=True)
class SseEvent:
    id: str
    event: str
    data: dict[str, Any]


class SseStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[SseEvent] = []

    async def _next(self) -> SseEvent:
        fields: dict[str, str] = {}
        while True:
            line = (await self.response.content.readline()).decode()
            if not line:
                raise EOFError("stream ended")
            line = line.rstrip("\n")
            if line == "":
                if "data" in fields:
                    return SseEvent(fields.get("id", ""), fields.get("event", "message"), orjson.loads(fields["data"]))
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    async def read_until(
        self, done: Callable[[list[SseEvent]], bool], timeout: float = 60.0, describe: str = "condition"
    ) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{describe} not met in {timeout}s; got {len(self.events)} events")
            self.events.append(await asyncio.wait_for(self._next(), left))
        return self.events


@asynccontextmanager
async def open_stream(
    http: aiohttp.ClientSession, url: str, key: str, last_event_id: str | None = None
) -> AsyncIterator[SseStream]:
    """Yields once the server has sent its first bytes: its position is fixed, nothing after is missed."""
    headers = {"X-API-Key": key, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        await response.content.readline()  # the first line: the stream is positioned
        yield SseStream(response)
