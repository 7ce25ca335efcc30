"""Build the Faust app from settings and topic specs; the one place that does."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

import faust

from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.runtime import collector
from app.settings import Settings
from app.worker import agents, faust_compat, scheduler, tables, wait_groups
from app.worker.rulebook import Rulebook


def build_app(deployment: Deployment) -> faust.App:
    settings, catalog, schemas, topology = (
        deployment.settings,
        deployment.catalog,
        deployment.schemas,
        deployment.topology,
    )
    datadir = (settings.worker.data_dir / "worker").resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust_compat.App(
        settings.group_id,
        fetch_max_wait_ms=settings.worker.fetch_max_wait_ms,
        broker=[f"kafka://{server}" for server in settings.kafka.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=topology.partitions,
        topic_replication_factor=topology.replication_factor,
        topic_min_insync_replicas=topology.min_insync_replicas,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_host=settings.worker.host,
        web_bind=settings.worker.host,
        web_port=settings.worker.port,
        web_transport="tcp://",
        # faust's 60 s default keeps a restarted worker waiting that long for its dead
        # predecessor to leave the group before it gets the partitions back.
        broker_session_timeout=settings.worker.session_timeout_s,
        broker_heartbeat_interval=settings.worker.session_timeout_s / 5,
        # No standby replicas: faust's standby reader can lose the first records it reads of
        # another worker's changelog, and the survivor of a rebalance then applies events on
        # stale state (tests/worker/test_crash.py catches it; compare
        # https://github.com/faust-streaming/faust/issues/212). A worker that takes a partition
        # over replays its changelog from its own last write instead: slower, but every record.
        table_standby_replicas=0,
    )
    rulebook = Rulebook(settings.paths.topics_dir, catalog)
    windows = tables.register(app, settings, catalog, schemas, topology)
    agents.register(app, settings, rulebook, schemas, topology, windows)
    scheduler.register(app, settings, schemas, topology)
    wait_groups.register(app, settings, schemas, topology)

    async def on_start() -> None:
        # mode's worker takes SIGINT, SIGTERM, SIGUSR1 and SIGUSR2; SIGHUP is ours.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rulebook.reload)
        collector.settle()

    app.task(on_start)
    return app


def run(settings: Settings) -> int:
    """`sluice worker`: create the topics, then run the Faust worker until SIGINT/SIGTERM; SIGHUP reloads rules."""
    deployment = Deployment.load(settings)
    # faust's own topics are named after the app id (its group id): checked with Sluice's.
    faust_topics = [settings.group_id + "-"]
    replication = asyncio.run(ensure_topics(settings.kafka.bootstrap, deployment.topology, prefixes=faust_topics))
    deployment = dataclasses.replace(deployment, topology=deployment.topology.with_replication(replication))
    app = build_app(deployment)
    # Faust's worker owns its own event loop and the process's signal handlers.
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=logging.getLevelName(settings.log_level.upper()), quiet=True)
    worker.execute_from_commandline()
    return 0
