"""Build the Faust app from settings and topic specs; the one place that does."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from typing import Any, cast

import faust

from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.observability import metrics
from app.observability.tracing import Tracing
from app.runtime import collector
from app.settings import Settings
from app.worker import agents, faust_compat, scheduler, tables, wait_groups
from app.worker.observed import Recovery
from app.worker.rulebook import Rulebook


def build_app(deployment: Deployment, tracing: Tracing | None = None) -> faust.App:
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
        Table=faust_compat.Table,
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
    rulebook = Rulebook(settings.paths.topics_dir, catalog, agents.compiler(settings, schemas))
    windows = tables.register(app, settings, catalog, schemas, topology)
    agents.register(app, settings, rulebook, schemas, topology, windows, tracing)
    scheduler.register(app, settings, schemas, topology)
    wait_groups.register(app, settings, schemas, topology)

    async def on_start() -> None:
        # mode's worker takes SIGINT, SIGTERM, SIGUSR1 and SIGUSR2; SIGHUP is ours.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rulebook.reload)
        collector.settle()

    app.task(on_start)
    observe(app, settings)
    return app


def observe(app: faust.App, settings: Settings) -> None:
    """/metrics on the worker's web port, rebalances counted, and a state recovery's progress, logged."""
    observability = settings.observability
    recovery = Recovery(measured=observability.metrics)

    async def recovering() -> None:
        recovery.sample(faust_compat.recovery_remaining(app))

    app.timer(1.0)(recovering)
    if not observability.metrics:
        return

    async def rebalanced(sender: Any, *args: Any, **kwargs: Any) -> None:
        metrics.REBALANCES.inc()

    app.on_partitions_assigned.connect(cast(Any, rebalanced))  # faust types receivers narrowly

    @app.page("/metrics")
    async def exported(view: Any, request: Any) -> Any:
        """The Prometheus text format; 401 without the bearer token when SLUICE_METRICS_TOKEN is set."""
        if not metrics.authorized(request.headers.get("Authorization"), observability.metrics_token):
            error = {"code": "unauthorized", "message": "/metrics needs its bearer token", "field": "Authorization"}
            return view.json(
                {"error": error}, status=401, headers={"WWW-Authenticate": 'Bearer realm="sluice-metrics"'}
            )
        body, content_type = metrics.exposition()
        return view.bytes(body, headers={"Content-Type": content_type})


def run(settings: Settings) -> int:
    """`sluice worker`: create the topics, then run the Faust worker until SIGINT/SIGTERM; SIGHUP reloads rules."""
    deployment = Deployment.load(settings)
    # faust's own topics are named after the app id (its group id): checked with Sluice's.
    faust_topics = [settings.group_id + "-"]
    replication = asyncio.run(ensure_topics(settings.kafka.bootstrap, deployment.topology, prefixes=faust_topics))
    deployment = dataclasses.replace(deployment, topology=deployment.topology.with_replication(replication))
    tracing = Tracing("sluice-worker", settings.observability.otlp_endpoint)
    app = build_app(deployment, tracing)
    # Faust's worker owns its own event loop and the process's signal handlers.
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=logging.getLevelName(settings.log_level.upper()), quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        tracing.shutdown()
    return 0
