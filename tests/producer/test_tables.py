"""The producer's gatherer of table partials: whose map of the group it follows, and what it asks each worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from app.errors import Unavailable
from app.producer.tables import Workers
from tests.support.stack import free_port


class Page:
    """A worker's /analytics/cluster/ and /analytics/rows/ pages, answering as told."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.generation = 0
        self.map: dict[str, list[int]] = {}
        self.serves: list[int] = []  # the partitions it answers for
        self.asked: list[str] = []

    async def cluster(self, request: web.Request) -> web.Response:
        return web.json_response({"partitions": 4, "generation": self.generation, "workers": self.map})

    async def rows(self, request: web.Request) -> web.Response:
        asked = [int(p) for p in request.query["partitions"].split(",")]
        self.asked.append(request.query["partitions"])
        return web.json_response({"partitions": [p for p in asked if p in self.serves], "rows": []})


@asynccontextmanager
async def serving(*pages: Page) -> AsyncIterator[None]:
    runners = []
    try:
        for page in pages:
            app = web.Application()
            app.router.add_get("/analytics/cluster/", page.cluster)
            app.router.add_get("/analytics/rows/", page.rows)
            runner = web.AppRunner(app)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", page.port).start()
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


def workers(tmp_path: Path, *pages: Page, timeout_s: float = 1.0) -> Workers:
    return Workers([page.url for page in pages], partitions=4, timeout_s=timeout_s)


async def test_the_newest_generations_map_is_followed_not_the_first_seeds(tmp_path: Path) -> None:
    stale, fresh = Page(), Page()
    # `stale` left the group at generation 3 holding everything; at generation 4 `fresh` holds 2 and 3.
    stale.generation, stale.map, stale.serves = 3, {stale.url: [0, 1, 2, 3]}, [0, 1]
    fresh.generation, fresh.map, fresh.serves = 4, {stale.url: [0, 1], fresh.url: [2, 3]}, [2, 3]
    gatherer = workers(tmp_path, stale, fresh)
    async with serving(stale, fresh):
        answers = await gatherer.gather("/analytics/rows/", {"tenant": "t", "table": "x"})
    await gatherer.close()
    assert sorted(p for answer in answers for p in answer["partitions"]) == [0, 1, 2, 3]
    assert (stale.asked, fresh.asked) == (["0,1"], ["2,3"])


async def test_partitions_nobody_answers_for_are_named_in_the_503(tmp_path: Path) -> None:
    only = Page()
    only.generation, only.map, only.serves = 2, {only.url: [0, 1, 2, 3]}, [0, 1]  # 2 and 3 still recovering
    gatherer = workers(tmp_path, only, timeout_s=0.5)
    async with serving(only):
        with pytest.raises(Unavailable) as refused:
            await gatherer.gather("/analytics/rows/", {"tenant": "t", "table": "x"})
    await gatherer.close()
    assert refused.value.field == "partitions" and "[2, 3]" in str(refused.value)
