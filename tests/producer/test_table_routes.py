"""The producer's table routes without workers: which tables a key sees, and refusals before any worker is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.core.tenants import KeyRing, Principal, hash_key
from app.deployment import Deployment
from app.producer.app import create_app
from app.producer.http import Context
from app.producer.publisher import Publisher
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    (tmp_path / "shop.yaml").write_text("tables:\n  - {name: per_type, window: {tumbling: 1h}, aggregate: count}\n")
    (tmp_path / "other.yaml").write_text("description: no tables\n")
    # No worker listens there: a query that got as far as asking one would answer 503.
    settings = Settings.from_env(
        {
            "SLUICE_ANALYTICS_WORKERS": "http://127.0.0.1:1",
            "SLUICE_ANALYTICS_QUERY_TIMEOUT_S": "0.5",
            "SLUICE_TOPICS_DIR": str(tmp_path),
            "SLUICE_SCHEMAS_DIR": str(REPO / "schemas"),
        }
    )
    deployment = Deployment.load(settings)
    schemas = deployment.schemas
    publisher = Publisher("127.0.0.1:1", dead_letter_schema=schemas["dead_letter"], timeout_s=1)  # never started
    keys = KeyRing(
        {
            hash_key("shop_key"): Principal("acme", frozenset({"shop"})),
            hash_key("other_key"): Principal("acme", frozenset({"other"})),
        }
    )
    context = Context(deployment, keys, publisher)
    async with TestClient(TestServer(create_app(context))) as client:
        yield client


async def test_a_key_limited_to_other_topics_sees_no_table(client: TestClient) -> None:
    response = await client.get("/tables", headers={"X-API-Key": "other_key"})
    assert (response.status, await response.json()) == (200, {"tables": []})
    response = await client.get("/tables/per_type", headers={"X-API-Key": "other_key"})
    body = await response.json()
    assert (response.status, body["error"]["code"], body["error"]["field"]) == (404, "table_not_found", "name")


async def test_unreachable_workers_are_a_503_with_retry_after(client: TestClient) -> None:
    response = await client.get("/tables/per_type", headers={"X-API-Key": "shop_key"})
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert "did not answer" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/tables/per_type?to=2026-01-01T00:00:00", "to"),  # no time zone
        ("/tables/per_type/top?n=1001", "n"),
        ("/tables/per_type/top?window=soon", "window"),
    ],
)
async def test_bad_parameters_name_the_field(client: TestClient, path: str, field: str) -> None:
    response = await client.get(path, headers={"X-API-Key": "shop_key"})
    body = await response.json()
    assert (response.status, body["error"]["field"]) == (400, field)
