"""Reading a /metrics answer in a test: samples by name and labels, through prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one /metrics answer."""

    def __init__(self, text: str) -> None:
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0.0 if none)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        return [sample.labels for sample in self.samples if sample.name == name]


async def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # A connection of its own each time: several producer processes share the port.
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        return Scrape(await response.text())


async def until_scraped(url: str, done: Callable[[Scrape], bool], what: str, timeout: float = 90.0) -> Scrape:
    """Scrape `url` every half second until `done` holds of the answer (a process still starting is waited for)."""
    deadline = time.monotonic() + timeout
    last: Scrape | None = None
    while True:
        try:
            last = await scrape(url)
            if done(last):
                return last
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{what} (waited {timeout:g} s); last scrape: {last and last.samples}"
        await asyncio.sleep(0.5)
