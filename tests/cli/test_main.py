"""The `sluice` command: config and connection problems are one clear line and exit code 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def sluice(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["producer", "worker"])
def test_unreachable_kafka_is_one_line(command: str) -> None:
    done = sluice(command, SLUICE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"sluice {command}: cannot reach Kafka at 127.0.0.1:")


def test_bad_setting_names_the_variable() -> None:
    done = sluice("producer", SLUICE_PRODUCER_PORT="eighty")
    assert done.returncode == 2
    assert done.stderr.strip() == "sluice producer: SLUICE_PRODUCER_PORT: must be an integer, got 'eighty'"


def test_bad_topic_file_stops_start_up_naming_file_rule_and_field(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text("rules:\n  - id: big\n    then: [{add_coins: lots}]\n")
    done = sluice("worker", SLUICE_TOPICS_DIR=str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path / 'orders.yaml'}: rule 'big': then[0].add_coins: must be an integer" in done.stderr


def test_hash_key_prints_the_sha256() -> None:
    done = sluice("hash-key", "dev_key_123")
    # sha256("dev_key_123"), computed independently
    assert done.stdout.strip() == "2104471f33ce72230e5221c02c7e055022bc30b2197e3075718f293d1ef69eff"


def test_simulate_prints_effects_and_writes_nothing(tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    events.write_text('[{"type": "orders"}, {"type": "refund"}]')
    done = sluice("simulate", "orders", str(events))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [e["totals"]["counters"]["orders"] for e in result["effects"]] == [1, 2]
    assert result["state"]["points"] == {"coins": 10}
    assert sluice("simulate", "nope", str(events)).returncode == 2
