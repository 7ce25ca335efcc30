"""Shared fixtures. `kafka_bootstrap`: one real Kafka broker for the whole test session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from app.kafka.launcher import LocalBroker, wait_for_kafka
from app.settings import Settings
from tests.support.stack import SluiceProcess, free_port

# --- Kafka -----------------------------------------------------------------------------------
# A test that requests `kafka_bootstrap` must also carry `@pytest.mark.integration` (or a module
# `pytestmark = pytest.mark.integration`), so that `pytest -m "not integration"` runs without Kafka.

KAFKA_IMAGE = "apache/kafka:4.0.1"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no SDK, no socket, no daemon: all mean "no Docker here"
        return False


def _kafka_container() -> Iterator[str]:
    # testcontainers' KafkaContainer drives Confluent images only (it runs their start scripts and
    # refuses KRaft below tag 7.0.0), so the official image runs as a plain single-node KRaft container.
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
    )
    with container:
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(wait_for_kafka(bootstrap, timeout=120))
        yield bootstrap


def _local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("kafka")
    broker = LocalBroker(
        home=Settings.from_env().kafka.home,  # the jar cache `sluice kafka` uses too
        data_dir=folder / "data",
        port=free_port(),
        controller_port=free_port(),
        log_file=folder / "broker.log",
    )
    broker.start()
    try:
        asyncio.run(broker.wait_ready(timeout=120))
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else apache/kafka in Docker if an engine answers; else a local JVM broker."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
    elif _docker_answers():
        yield from _kafka_container()
    else:
        yield from _local_broker(tmp_path_factory)


# --- end of Kafka ------------------------------------------------------------------------------


# --- what the processes said, when a test fails ------------------------------------------------

_FIRST_PROCESS = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_PROCESS] = len(SluiceProcess.started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    first = item.stash.get(_FIRST_PROCESS, len(SluiceProcess.started))
    for n, process in enumerate(SluiceProcess.started):
        if n >= first or process.running():  # its own, and those of fixtures it shares
            report.sections.append((f"sluice {process.command} log", process.report()))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for one test."""
    async with aiohttp.ClientSession() as session:
        yield session
