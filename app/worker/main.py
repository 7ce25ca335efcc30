"""Build the Faust app from settings and topic specs; the one place that does."""

from __future__ import annotations

import asyncio
import logging
import signal

import faust

from app import collector
from app.schemas import SchemaSet
from app.settings import Settings
from app.topics import Catalog
from app.topology import Topology, ensure_topics
from app.worker import agents, analytics, scheduler, transport, wait_groups
from app.worker.rulebook import Rulebook


def build_app(settings: Settings) -> faust.App:
    catalog = Catalog.load(settings.topics_dir)
    schemas = SchemaSet.load(settings.schemas_dir)
    topology = Topology.of(settings, catalog)
    datadir = (settings.data_dir / "worker").resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    app = transport.App(
        settings.group_id,
        fetch_max_wait_ms=settings.worker_fetch_max_wait_ms,
        broker=[f"kafka://{server}" for server in settings.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=topology.partitions,
        topic_replication_factor=topology.replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_host=settings.worker_host,
        web_bind=settings.worker_host,
        web_port=settings.worker_port,
        web_transport="tcp://",
        # faust's 60 s default keeps a restarted worker waiting that long for its dead
        # predecessor to leave the group before it gets the partitions back.
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=settings.worker_session_timeout_s / 5,
        # No standby replicas: faust's standby reader lost the first records it read of another
        # worker's changelog (tests/worker/test_crash.py, seed 3704743525: changelog offsets 0-42
        # never reached the survivor's RocksDB, so it applied events on stale state; compare
        # faust-streaming issue 212). A worker that takes a partition over replays its changelog
        # from its own last write instead, which takes longer but reads every record.
        table_standby_replicas=0,
    )
    rulebook = Rulebook(settings.topics_dir, catalog)
    windows = analytics.register(app, settings, catalog, schemas, topology)
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
    catalog = Catalog.load(settings.topics_dir)
    asyncio.run(ensure_topics(settings.bootstrap, Topology.of(settings, catalog)))
    app = build_app(settings)
    # Faust's worker owns its own event loop and the process's signal handlers.
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=logging.getLevelName(settings.log_level.upper()), quiet=True)
    worker.execute_from_commandline()
    return 0
