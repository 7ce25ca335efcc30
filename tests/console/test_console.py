"""The console in headless Chromium against a real producer and worker: rates, refusals, the live tail, the tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright

from tests.support.stack import REPO, Stack, read_until, unique
from tests.worker.test_crash import wait_ready

pytestmark = pytest.mark.integration
# Debian's Chromium, which the Makefile installs when absent (it passes its own CHROMIUM on).
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# A path (docs/console.png) to keep a screenshot of the page full of live traffic.
SCREENSHOT = os.environ.get("CONSOLE_SCREENSHOT")
KEY = "console_key"
WAIT_MS = 30_000


class Cuttable:
    """A TCP proxy in front of the producer whose connections the test cuts, and refuses until it resumes."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self._open = False
        for writer in list(self._writers):
            writer.transport.abort()

    def resume(self) -> None:
        self._open = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(self._pump(reader, upstream_writer), self._pump(upstream_reader, writer))
        finally:
            for each in (writer, upstream_writer):
                self._writers.discard(each)
                each.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("console"), api_keys=f"{KEY}:acme")
    await stack.start_producer()
    worker = stack.start("worker")
    await wait_ready(worker, 0)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Chromium's executable; a clear failure, not a skip, without it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console test drives Chromium at {CHROMIUM}, which is missing: install Debian's chromium package "
            "(make test does, with apt-get), or set CHROMIUM to another Chromium's executable"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def proxy(stack: Stack) -> AsyncIterator[Cuttable]:
    proxy = Cuttable(stack.producer_port)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        return response.status, await response.json()


def order(user: str) -> dict[str, Any]:
    return {"data": {"user_id": user}, "metadata": {"type": "order_placed"}}


def page_views(now: datetime) -> list[dict[str, Any]]:
    """Product analytics events over the last six hours, oldest first (later windows would make older ones late)."""
    events = []
    for hours in range(5, -1, -1):
        for n, (name, platform) in enumerate([("page_view", "web"), ("page_view", "ios"), ("click", "android")]):
            for repeat in range((n + 1) * (7 - hours) % 9 + 1):
                events.append(
                    {
                        "event_id": unique("pv"),
                        "event_type": "view",
                        "event_name": name,
                        "event_time": (now - timedelta(hours=hours, minutes=repeat)).isoformat(),
                        "user_id": f"user-{repeat}",
                        "session_id": "s1",
                        "page_name": "home",
                        "platform": platform,
                    }
                )
    return events


async def send_until(stop: asyncio.Event, http: aiohttp.ClientSession, url: str) -> None:
    """Accepted orders every 100 ms and a refused one every 500 ms, until `stop`: the rates have something to show."""
    n = 0
    while not stop.is_set():
        await post(http, f"{url}/topics/orders/events", order(f"busy-{n % 7}") if n % 5 else {"data": "no"})
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def above_zero(page: Page, element_id: str) -> None:
    """Wait for a number above zero (a rate is never negative) in the element's data-value."""
    await page.locator(f"#{element_id}[data-value]:not([data-value='0'])").wait_for(timeout=WAIT_MS)


async def test_the_console_shows_the_tenants_traffic_live(
    browser: Browser, stack: Stack, proxy: Cuttable, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    analytics = await post(http, f"{stack.url}/ingest/batch", {"events": page_views(datetime.now(UTC))})
    assert analytics[0] == 200, analytics
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    streams: list[Request] = []
    page.on("request", lambda request: streams.append(request) if "/effects/stream" in request.url else None)

    await page.goto(f"http://127.0.0.1:{proxy.port}/console")
    await page.fill("#key", KEY)
    await page.click("#key-form button[type=submit]")
    assert await page.evaluate("sessionStorage.getItem('sluice.console.key')") == KEY
    await page.wait_for_selector("#tail-status:text-is('live')", timeout=WAIT_MS)
    assert await page.text_content("#tenant") == "tenant acme"

    # A refused event's reason, as the producer answered it, shows among the refused events.
    status, refusal = await post(http, f"{stack.url}/topics/orders/events", {"data": "not an object"})
    assert status == 400, refusal
    reason = refusal["error"]["message"]
    await page.locator("#refused td.message", has_text=reason).first.wait_for(timeout=WAIT_MS)

    # While events arrive, every rate shows more than zero, and a new effect appears in the live tail.
    stop = asyncio.Event()
    sender = asyncio.create_task(send_until(stop, http, stack.url))
    try:
        _, accepted = await post(http, f"{stack.url}/topics/orders/events", order(unique("user")))
        await page.locator(f"#tail li[data-event-id='{accepted['id']}']").wait_for(timeout=WAIT_MS)
        for element_id in ("accepted-rate", "refused-rate", "effects-rate"):
            await above_zero(page, element_id)
        # Each windowed table is drawn, with a point per key and window.
        await page.locator("figure[data-table='events_per_platform'] circle").first.wait_for(timeout=WAIT_MS)
        if SCREENSHOT:
            await page.locator("#refused tbody tr:nth-child(3)").wait_for(timeout=WAIT_MS)  # the sender's too
            await page.screenshot(path=REPO / SCREENSHOT, full_page=True)
    finally:
        stop.set()
        await sender

    # Cut off, the tail resumes from its last id: an effect made meanwhile still shows.
    proxy.cut()
    # Once the page knows its stream ended, it has handled every byte the stream brought.
    await page.locator("#tail-status", has_text="reconnecting").wait_for(timeout=WAIT_MS)
    last = await page.get_attribute("#tail li:first-child", "data-cursor")
    cut_at = len(streams)
    _, missed = await post(http, f"{stack.url}/topics/orders/events", order(unique("away")))
    await read_until(
        stack.bootstrap, stack.topic("effects"), lambda r: any(e["event_id"] == missed["id"] for e in r), timeout=30
    )
    proxy.resume()
    await page.locator(f"#tail li[data-event-id='{missed['id']}']").wait_for(timeout=WAIT_MS)
    resumed = [await request.all_headers() for request in streams[cut_at:]]
    assert resumed and all(headers.get("last-event-id") == last for headers in resumed), (last, resumed)

    # The key stays for the tab's session (a reload needs none) and goes when forgotten.
    await page.reload()
    await page.wait_for_selector("#console:not([hidden])", timeout=WAIT_MS)
    await page.click("#sign-out")
    await page.wait_for_selector("#key-form:not([hidden])")
    assert await page.evaluate("sessionStorage.getItem('sluice.console.key')") is None
    assert await page.locator("#tail li, #refused tbody tr").count() == 0  # nothing left for the next key to see
    assert await page.text_content("#accepted-rate") == "\N{EN DASH}"  # no number
    await context.close()
    assert time.monotonic() - started < 60


async def test_the_stream_parser_counts_an_id_once_its_event_is_whole(browser: Browser, stack: Stack) -> None:
    page = await browser.new_page()
    await page.goto(f"{stack.url}/console")
    # Line breaks of every kind, one split between its CR and LF, a comment, and an event cut off at the end.
    parsed = await page.evaluate(
        """async () => {
            const chunks = ["retry: 500\\nid: a\\n\\n", "id: b\\r", "\\nevent: effect\\ndata: {\\"n\\":1}\\r\\n",
                            "data: 2\\r\\r: quiet\\n", "id: c\\ndata: 3\\n"];
            const body = new ReadableStream({start(controller) {
                for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
                controller.close();
            }});
            const tail = {lastEventId: null, retry: 1000};
            const got = [];
            await events(body, tail, (event) => got.push(event));
            return {got, lastEventId: tail.lastEventId, retry: tail.retry};
        }"""
    )
    await page.close()
    assert parsed == {
        "got": [{"type": "effect", "data": '{"n":1}\n2', "id": "b"}],
        "lastEventId": "b",  # "c" belongs to an event that never ended: resuming after it would skip it
        "retry": 500,
    }
