"""SIGHUP reloads the topic files: new rules for new events, bad files change nothing."""

from __future__ import annotations

import functools
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app import native
from app.catalog import Catalog
from app.deployment import Deployment
from app.settings import Settings
from app.worker.agents import compiler
from app.worker.rulebook import Rulebook
from tests.support.stack import REPO, SluiceProcess, Stack, read_until
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


def test_reload_compiles_the_new_rules_with_them(tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    versions: list[str] = []

    def compile_rules(catalog: Catalog) -> str:
        versions.append(catalog["orders"].rules_version)
        return versions[-1]

    book = Rulebook(folder, Catalog.load(folder), compile_rules)
    assert book.program == book["orders"].rules_version
    (folder / "orders.yaml").write_text(ORDERS.read_text().replace("add_coins: 10", "add_coins: 25"))
    assert book.reload()
    assert book.program == book["orders"].rules_version == versions[-1] != versions[0]


def test_the_engine_is_compiled_unless_the_settings_or_the_rules_say_otherwise(tmp_path: Path) -> None:
    folder = topics_copy(tmp_path)
    schemas = Deployment.load(Settings.from_env({"SLUICE_TOPICS_DIR": str(folder)})).schemas
    assert compiler(Settings.from_env({"SLUICE_WORKER_COMPILED": "false"}), schemas) is None
    compile_rules = compiler(Settings.from_env({}), schemas)
    assert compile_rules is not None and native.AVAILABLE
    assert compile_rules(Catalog.load(folder)) is not None
    # `matches` takes Python's regular expressions, which the compiled core does not have.
    (folder / "orders.yaml").write_text(python_only(ORDERS.read_text()))
    assert compile_rules(Catalog.load(folder)) is None


def python_only(topic_file: str) -> str:
    """The topic file with a first rule that never fires but needs the Python engine (`matches`)."""
    rule = "{id: m, when: {field: data.sku, matches: '^zz'}, then: [stop]}"
    return topic_file.replace("rules:", f"rules:\n  - {rule}", 1)


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


@pytest.mark.integration
async def test_a_reload_that_changes_the_engine_keeps_every_total(kafka_bootstrap: str, tmp_path: Path) -> None:
    # Python engine, compiled core, Python engine: each keeps its own cache of user records,
    # which must not outlive a spell of the other's writes.
    folder = topics_copy(tmp_path)
    (folder / "orders.yaml").write_text(python_only(ORDERS.read_text()))
    stack = Stack.create(kafka_bootstrap, tmp_path, api_keys="hup:acme", SLUICE_TOPICS_DIR=str(folder))
    await stack.start_producer()
    worker = stack.start("worker")
    try:
        user = "u-" + uuid.uuid4().hex[:8]
        for n, (topic_file, engine) in enumerate(
            [(None, "Python"), (ORDERS.read_text(), "compiled"), (python_only(ORDERS.read_text()), "Python")]
        ):
            if topic_file is not None:
                (folder / "orders.yaml").write_text(topic_file)
                assert worker.process is not None
                worker.process.send_signal(signal.SIGHUP)
                await until(functools.partial(reloaded, worker, n), timeout=30, what=f"reload {n}")
            await until(functools.partial(engine_is, worker, engine), timeout=30, what=f"the {engine} engine")
            sent = await post(stack, {"data": {"user_id": user}})
            effect = await effect_of(stack, sent)
            assert effect["totals"]["coins"] == 10 * (n + 1)
    finally:
        stack.stop()


def engine_is(worker: SluiceProcess, engine: str) -> bool:
    return worker.log_tail(400).split("rules engine: ")[-1].startswith(engine)


def reloaded(worker: SluiceProcess, times: int) -> bool:
    return worker.log_tail(400).count("rules reloaded") == times


async def effect_of(stack: Stack, event_id: str) -> dict[str, Any]:
    effects = await read_until(
        stack.bootstrap, stack.topic("effects"), lambda rs: any(r["event_id"] == event_id for r in rs)
    )
    return next(r for r in effects if r["event_id"] == event_id)


async def post(stack: Stack, body: dict[str, Any]) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/topics/orders/events", json=body, headers={"X-API-Key": "hup"}) as response,
    ):
        assert response.status == 201
        event_id: str = (await response.json())["id"]
        return event_id
