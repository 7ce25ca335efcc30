"""The worker's Kafka consumer takes its fetch wait from the settings, not faust's fixed 1.5 s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from app.settings import Settings
from app.worker.main import build_app


async def test_the_consumer_waits_as_long_as_the_setting_says(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path, worker_fetch_max_wait_ms=37)
    app = build_app(settings)
    # The aiokafka consumer faust's consumer thread would start; building it connects to nothing.
    thread = cast(Any, app.consumer)._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37
