"""`sluice up` against a given broker: serves, and SIGTERM stops every child cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from app.runtime.processes import wait_for_health
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in found.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


async def test_up_serves_and_stops_all_children_on_sigterm(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = Stack.create(kafka_bootstrap, tmp_path, api_keys="up_key:dev")
    up = stack.start("up")
    assert up.process is not None
    try:
        await wait_for_health(stack.url, up.running, up.log_tail)
        children = children_of(up.process.pid)
        assert len(children) == 3, children  # producer, worker and deliver; no local broker was started
        assert "API key   up_key  (tenant dev)" in up.log_tail(100)

        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(timeout=60) == 0, up.log_tail()
        assert not [pid for pid in children if alive(pid)]
    finally:
        up.kill()


async def test_producer_processes_share_one_port_and_stop_together(kafka_bootstrap: str, tmp_path: Path) -> None:
    stack = Stack.create(kafka_bootstrap, tmp_path, api_keys="pk:dev", SLUICE_PRODUCER_PROCESSES="2")
    group = stack.start("producer")
    assert group.process is not None
    try:
        await wait_for_health(stack.url, group.running, group.log_tail)
        children = children_of(group.process.pid)
        assert len(children) == 2, children
        group.process.send_signal(signal.SIGTERM)
        assert group.process.wait(timeout=60) == 0, group.log_tail()
        assert not [pid for pid in children if alive(pid)]
    finally:
        group.kill()
