"""Deployments for tests that build a process's parts without reaching a broker."""

from __future__ import annotations

from pathlib import Path

from app.deployment import Deployment
from app.settings import Settings
from tests.support.stack import REPO


def offline(data_dir: Path, **env: str) -> Deployment:
    """The repository's topics and schemas, a bootstrap address nothing listens on, state under `data_dir`."""
    return Deployment.load(
        Settings.from_env(
            {
                "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                "SLUICE_DATA_DIR": str(data_dir),
                "SLUICE_TOPICS_DIR": str(REPO / "topics"),
                "SLUICE_SCHEMAS_DIR": str(REPO / "schemas"),
                **env,
            }
        )
    )
