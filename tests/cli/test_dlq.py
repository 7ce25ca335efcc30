"""`sluice dlq list|replay` against a running producer: JSON lines, a progress line, events on their topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from app.cli.dlq import Filter, api, patch_of
from app.errors import ConfigError, ValidationError
from app.settings import Settings
from tests.support.stack import REPO, Stack, read_until, unique

ACME, BETA = "cli_dlq_acme", "cli_dlq_beta"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("cli-dlq"), api_keys=f"{ACME}:acme,{BETA}:beta")
    await stack.start_producer()
    yield stack
    stack.stop()


async def sluice(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


async def refuse(stack: Stack, marker: str, count: int) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": ACME}) as http:
        for n in range(count):
            async with http.post(f"{stack.url}/topics/orders/events", json={"data": {"marker": marker, "n": n}}) as r:
                assert r.status == 400


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


@pytest.mark.integration
async def test_list_prints_json_lines_and_replay_publishes_with_a_progress_line(stack: Stack) -> None:
    marker = unique("cli")
    await refuse(stack, marker, 3)

    listed = await sluice("dlq", "list", "--url", stack.url, "--key", ACME, "--reason", "validation")
    assert listed.returncode == 0, listed.stderr
    mine = [r for r in lines(listed.stdout) if r["body"]["data"]["marker"] == marker]
    assert [(r["code"], r["body"]["data"]["n"]) for r in mine] == [("validation.required", n) for n in range(3)]
    newest = await sluice("dlq", "list", "--url", stack.url, "--newest", "--limit", "2", SLUICE_API_KEY=ACME)
    assert newest.returncode == 0, newest.stderr
    assert [r["id"] for r in lines(newest.stdout)] == [mine[2]["id"], mine[1]["id"]]

    since = ["--from", mine[0]["received_at"], "--to", mine[2]["received_at"]]
    patch = orjson.dumps({"data": {"user_id": marker}}).decode()
    done = await sluice("dlq", "replay", "--url", stack.url, "--key", ACME, *since, "--patch", patch)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"replayed": 3, "still_refused": [], "matched": 3, "dry_run": False}
    assert "replayed 3 events of 3 dead letters, 0 still refused (" in done.stderr
    assert "dead letters/s)" in done.stderr

    events = await read_until(
        stack.bootstrap,
        stack.topic("events.orders"),
        lambda records: sum(r["user_id"] == marker for r in records) == 3,
        timeout=30,
        describe="the three replayed events",
    )
    assert sorted(orjson.loads(r["data"])["n"] for r in events if r["user_id"] == marker) == [0, 1, 2]


@pytest.mark.integration
async def test_replay_by_id_dry_run_lists_what_is_still_refused(stack: Stack) -> None:
    marker = unique("cli-id")
    await refuse(stack, marker, 1)
    listed = await sluice("dlq", "list", "--url", stack.url, "--key", ACME)
    (letter,) = [r for r in lines(listed.stdout) if r["body"]["data"]["marker"] == marker]
    done = await sluice("dlq", "replay", "--url", stack.url, "--key", ACME, "--id", letter["id"], "--dry-run")
    assert done.returncode == 0, done.stderr
    answer = orjson.loads(done.stdout)
    assert (answer["replayed"], answer["matched"], answer["dry_run"]) == (0, 1, True)
    assert [(r["id"], r["field"]) for r in answer["still_refused"]] == [(letter["id"], "data.user_id")]
    assert "would replay 0 events of 1 dead letters, 1 still refused" in done.stderr


@pytest.mark.integration
async def test_another_tenants_key_lists_none_of_them(stack: Stack) -> None:
    marker = unique("cli-beta")
    await refuse(stack, marker, 1)
    listed = await sluice("dlq", "list", "--url", stack.url, SLUICE_API_KEY=BETA)
    assert listed.returncode == 0, listed.stderr
    assert marker not in listed.stdout


@pytest.mark.integration
async def test_a_refused_parameter_is_one_line_naming_it(stack: Stack) -> None:
    done = await sluice("dlq", "list", "--url", stack.url, "--key", ACME, "--from", "yesterday")
    assert done.returncode == 1
    assert done.stderr.startswith("sluice dlq list: 400 must be an RFC 3339 date-time") and "(from)" in done.stderr
    done = await sluice("dlq", "replay", "--url", stack.url, "--key", "nobody")
    assert (done.returncode, done.stderr.strip()) == (1, "sluice dlq replay: 401 unknown API key (X-API-Key)")


def test_a_patch_is_json_or_a_file_of_it(tmp_path: Path) -> None:
    assert patch_of(None) == (False, None)
    assert patch_of("null") == (True, None)
    (tmp_path / "fix.json").write_text('{"data": {"user_id": "u"}}')
    assert patch_of(f"@{tmp_path / 'fix.json'}") == (True, {"data": {"user_id": "u"}})
    for bad in ("{", f"@{tmp_path / 'missing.json'}"):
        with pytest.raises(ValidationError) as refused:
            patch_of(bad)
        assert refused.value.field == "--patch"


def test_the_filter_sends_only_what_was_given() -> None:
    assert Filter().as_body() == {}
    assert Filter("validation", "2026-05-04T00:00:00Z", None, ("0:1",)).as_body() == {
        "reason": "validation",
        "from": "2026-05-04T00:00:00Z",
        "ids": ["0:1"],
    }


def test_the_key_is_the_option_else_sluice_api_key_else_the_first_development_key() -> None:
    settings = Settings.from_env({"SLUICE_API_KEYS": "k1:acme,k2:beta"})
    assert api(settings, None, None) == ("http://127.0.0.1:8080", "k1")
    assert api(Settings.from_env({"SLUICE_API_KEY": "mine", "SLUICE_API_KEYS": "k1:acme"}), None, None)[1] == "mine"
    assert api(settings, "http://h:1/", "given") == ("http://h:1", "given")
    with pytest.raises(ConfigError):
        api(Settings.from_env({}), None, None)


def test_a_limit_below_one_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "dlq", "list", "--limit", "0"],
        env={k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip()) == (2, "sluice dlq: --limit: must be at least 1")
