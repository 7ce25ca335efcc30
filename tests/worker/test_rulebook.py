"""SIGHUP reloads the topic files: new rules for new events, bad files change nothing."""

from __future__ import annotations

import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.catalog import Catalog
from app.worker.rulebook import Rulebook
from tests.support.stack import REPO, Stack, read_until
from tests.support.wait import until

ORDERS = REPO / "topics" / "orders.yaml"


def topics_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "topics"
    shutil.copytree(REPO / "topics", folder)
    return folder


def test_reload_swaps_in_new_rules(tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    book = Rulebook(folder, Catalog.load(folder))
    before = book["orders"].rules_version
    (folder / "orders.yaml").write_text(ORDERS.read_text().replace("add_coins: 10", "add_coins: 25"))
    assert book.reload()
    assert book["orders"].rules_version != before


def test_a_bad_file_keeps_the_old_rules(tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    book = Rulebook(folder, Catalog.load(folder))
    before = book["orders"].rules_version
    (folder / "orders.yaml").write_text("rules: [{id: x, then: [{teleport: 1}]}]\n")
    assert not book.reload()
    assert book["orders"].rules_version == before


def test_a_new_topic_needs_a_restart(tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    book = Rulebook(folder, Catalog.load(folder))
    (folder / "extra.yaml").write_text("description: new\n")
    assert not book.reload()
    with pytest.raises(KeyError):
        book["extra"]


@pytest.mark.integration
async def test_sighup_applies_new_rules_to_new_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    stack = Stack.create(kafka_bootstrap, tmp_path, api_keys="hup:acme", SLUICE_TOPICS_DIR=str(folder))
    await stack.start_producer()
    worker = stack.start("worker")
    try:
        user = "u-" + uuid.uuid4().hex[:8]
        first = await post(stack, {"data": {"user_id": user}})
        effects = await read_until(
            stack.bootstrap, stack.topic("effects"), lambda rs: any(r["event_id"] == first for r in rs)
        )
        old = next(r for r in effects if r["event_id"] == first)
        assert old["changes"]["coins"] == 10

        (folder / "orders.yaml").write_text(ORDERS.read_text().replace("add_coins: 10", "add_coins: 25"))
        assert worker.process is not None
        worker.process.send_signal(signal.SIGHUP)
        await until(lambda: "rules reloaded" in worker.log_tail(400), timeout=30, what="'rules reloaded' never logged")

        second = await post(stack, {"data": {"user_id": user}})
        effects = await read_until(
            stack.bootstrap, stack.topic("effects"), lambda rs: any(r["event_id"] == second for r in rs)
        )
        new = next(r for r in effects if r["event_id"] == second)
        assert new["changes"]["coins"] == 25
        assert new["totals"]["coins"] == 35  # the first event kept its old effect
        assert new["rules_version"] != old["rules_version"]
        assert worker.running()
    finally:
        stack.stop()


async def post(stack: Stack, body: dict[str, Any]) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/topics/orders/events", json=body, headers={"X-API-Key": "hup"}) as response,
    ):
        assert response.status == 201
        event_id: str = (await response.json())["id"]
        return event_id
