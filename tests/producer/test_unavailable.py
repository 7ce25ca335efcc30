"""A stopped broker means 503 with Retry-After, never a false 2xx."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from app.kafka.launcher import LocalBroker
from app.settings import Settings
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.integration


async def test_503_with_retry_after_once_the_broker_is_gone(tmp_path: Path) -> None:
    # This test stops its broker, so it runs its own rather than the session's.
    broker = LocalBroker(
        home=Settings.from_env({}).kafka.home,
        data_dir=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        log_file=tmp_path / "broker.log",
    )
    broker.start()
    try:
        await broker.wait_ready(timeout=120)
        stack = Stack.create(broker.bootstrap, tmp_path, api_keys="k:acme", SLUICE_PUBLISH_TIMEOUT_S="2")
        await stack.start_producer()
        body = {"data": {"user_id": "u1"}}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                stack.url + "/topics/orders/events", json=body, headers={"X-API-Key": "k"}
            ) as response:
                assert response.status == 201
            broker.stop()
            async with http.post(
                stack.url + "/topics/orders/events", json=body, headers={"X-API-Key": "k"}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["error"]["code"] == "unavailable"
        stack.stop()
    finally:
        broker.stop()
