"""docker-compose.yml and the Dockerfile, checked without a Docker engine or a broker.

The point: the containers name only settings that exist, with values Settings accepts, so a typo
such as SLUICE_PRODUCR_PORT fails here instead of being silently ignored inside a container.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, TypeGuard

import pytest
import yaml

from app.errors import SettingsError
from app.settings import Settings

PREFIX = "SLUICE_"

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
# safe_load resolves anchors, aliases and `<<` merge keys, as Compose does.
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SLUICE_SERVICES = {"producer": "producer", "worker": "worker", "deliver": "deliver"}  # service -> `sluice` command
# Compose interpolates ${NAME}, ${NAME:-default}, ... and $NAME; `$$` is a literal dollar.
SUBSTITUTION = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def environment(service: str) -> dict[str, str | None]:
    """A service's `environment:`, mapping or `- KEY=value` list; None: passed through from the host."""
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(name): _scalar(value) for name, value in env.items()}


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def literal(value: str | None) -> TypeGuard[str]:
    return value is not None and not SUBSTITUTION.search(value.replace("$$", ""))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, line continuations joined and comments dropped."""
    lines = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    parsed = [line.strip().split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in parsed]


def dockerfile_env() -> dict[str, str]:
    """The image's ENV, in the `ENV k=v k2=v2` form and the legacy `ENV k v` one."""
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction != "ENV":
            continue
        words = shlex.split(args)
        if "=" not in words[0]:  # legacy `ENV name value`
            name, value = args.split(None, 1)
            env[name] = value.strip()
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def mounts(service: str) -> dict[str, str]:
    """Container path -> volume name or host path, from the short ("src:target[:ro]") or the long syntax."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = volume.get("source", "")
        else:
            source, target, *_ = str(volume).split(":")
            found[target] = source
    return found


def published_ports(service: str) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from the short ("[ip:]8080:8080[/tcp]") or the long syntax."""
    pairs = set()
    for port in SERVICES[service].get("ports", []):
        if isinstance(port, dict):
            pairs.add((int(port["published"]), int(port["target"])))
        else:
            *_, published, target = str(port).split("/")[0].split(":")
            pairs.add((int(published), int(target)))
    return pairs


def test_kafka_is_the_official_image_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert re.fullmatch(r"4\.0\.\d+", tag), tag
    env = environment("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in " ".join(env).lower()
    # The data volume holds the broker's log dir (the image's default is /tmp/kraft-combined-logs).
    log_dirs = env.get("KAFKA_LOG_DIRS")
    assert log_dirs, "set KAFKA_LOG_DIRS, else the broker writes to /tmp/kraft-combined-logs"
    assert mounts("kafka").get(log_dirs) in COMPOSE["volumes"], f"{log_dirs} must be on a named volume"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


@pytest.mark.parametrize(("service", "command"), SLUICE_SERVICES.items())
def test_sluice_services_build_from_the_dockerfile(service: str, command: str) -> None:
    spec = SERVICES[service]
    build = spec["build"]
    if isinstance(build, str):
        build = {"context": build}
    path = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert path.resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()
    assert "entrypoint" not in spec, "the image's ENTRYPOINT is `sluice`; the command picks the subcommand"
    given = spec["command"]
    assert (shlex.split(given) if isinstance(given, str) else given) == [command]
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", SLUICE_SERVICES)
def test_environment_names_only_settings_that_exist(service: str) -> None:
    env = environment(service)
    assert env, service
    unknown = sorted(set(env) - Settings.env_names())
    assert not unknown, f"{service} sets {unknown}, which Sluice does not read (typo?)"
    for name, value in env.items():
        if name.startswith(PREFIX) and literal(value):
            try:
                Settings.from_env({name: value})
            except SettingsError as exc:
                pytest.fail(f"{service}: {name}={value!r}: {exc.message}")


@pytest.mark.parametrize("service", SLUICE_SERVICES)
def test_sluice_services_reach_the_kafka_service(service: str) -> None:
    advertised = environment("kafka")["KAFKA_ADVERTISED_LISTENERS"] or ""
    listeners = {address.split("://", 1)[1] for address in advertised.split(",")}
    assert environment(service)["SLUICE_KAFKA_BOOTSTRAP_SERVERS"] in listeners


def test_producer_is_published_on_8080() -> None:
    env = environment("producer")
    settings = Settings.from_env({name: value for name, value in env.items() if literal(value)})
    assert (8080, settings.producer.port) in published_ports("producer")
    assert settings.producer.host == "0.0.0.0"  # reachable through the published port
    assert env["SLUICE_API_KEYS"] == "${SLUICE_API_KEYS:-dev_key_123:dev}"  # the README's key by default


def test_worker_state_is_on_a_named_volume() -> None:
    data_dir = dockerfile_env()["SLUICE_DATA_DIR"]
    assert mounts("worker").get(data_dir) in COMPOSE["volumes"], f"{data_dir} must be on a named volume"


def test_dockerfile_runs_the_sluice_console_script() -> None:
    instructions = dockerfile()
    last = {instruction: args for instruction, args in instructions}
    assert last["FROM"].startswith("python:3.11")
    assert json.loads(last["ENTRYPOINT"]) == ["sluice"]
    assert json.loads(last["CMD"]) == ["producer"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sluice"] == "app.cli.main:main"
    assert last["USER"].split(":")[0] not in {"root", "0"}


def test_dockerfile_environment_names_real_settings() -> None:
    env = {name: value for name, value in dockerfile_env().items() if name.startswith(PREFIX)}
    assert not sorted(set(env) - Settings.env_names())
    settings = Settings.from_env(env)
    for folder in (settings.paths.topics_dir, settings.paths.schemas_dir):
        assert (REPO / folder.name).is_dir()


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    copied = [word for instruction, args in dockerfile() if instruction == "COPY" for word in shlex.split(args)[:-1]]
    assert {"pyproject.toml", "README.md", "app", "topics", "schemas"} <= set(copied)
    assert not ignored & set(copied)
