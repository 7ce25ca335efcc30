"""docker-compose.yml and the Dockerfile, checked without a Docker engine: names only real settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SUBSTITUTION = re.compile(r"\$\{[^}]*\}")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def test_kafka_is_the_official_image_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag.startswith("4.0.")
    assert environment("kafka")["KAFKA_PROCESS_ROLES"] == "broker,controller"


@pytest.mark.parametrize(("service", "command"), [("producer", "producer"), ("worker", "worker")])
def test_sluice_services_build_from_the_dockerfile(service: str, command: str) -> None:
    spec = SERVICES[service]
    assert spec["build"] in (".", {"context": "."})
    assert (REPO / "Dockerfile").is_file()
    assert spec["command"] == [command]
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["producer", "worker"])
def test_environment_names_only_settings_that_exist(service: str) -> None:
    env = environment(service)
    assert env, service
    unknown = sorted(set(env) - Settings.env_names())
    assert not unknown, f"{service} sets unknown settings {unknown}"
    literal = {name: value for name, value in env.items() if not SUBSTITUTION.search(value)}
    Settings.from_env(literal)  # a value of the wrong type fails here
    assert env["SLUICE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_producer_is_published_on_8080() -> None:
    assert "8080:8080" in SERVICES["producer"]["ports"]
    assert environment("producer")["SLUICE_PRODUCER_HOST"] == "0.0.0.0"


def test_dockerfile_runs_the_sluice_console_script() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["sluice"\]$', dockerfile, re.MULTILINE)
    assert "FROM python:3.11" in dockerfile
    for folder in ("app", "topics", "schemas"):
        assert f"COPY {folder} ./{folder}" in dockerfile
