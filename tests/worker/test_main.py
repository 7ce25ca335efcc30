"""How the one place that builds the worker's Faust app configures it."""

from __future__ import annotations

from pathlib import Path

from app.worker.main import build_app
from tests.support.deployments import offline


def test_workers_keep_no_standby_replicas(tmp_path: Path) -> None:
    # faust's standby reader lost the first records of another worker's changelog, and the
    # survivor of a rebalance then applied events on stale state (app/worker/main.py).
    app = build_app(offline(tmp_path))
    assert app.conf.table_standby_replicas == 0
