"""/openapi.json describes every route the producer serves."""

from __future__ import annotations

from pathlib import Path

from app.core.tenants import KeyRing
from app.deployment import Deployment
from app.producer import openapi
from app.producer.app import create_app
from app.producer.http import Context
from app.producer.publisher import Publisher
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


async def test_every_route_is_in_the_document() -> None:
    deployment = Deployment.load(
        Settings.from_env({"SLUICE_TOPICS_DIR": str(REPO / "topics"), "SLUICE_SCHEMAS_DIR": str(REPO / "schemas")})
    )
    publisher = Publisher(
        "127.0.0.1:1", dead_letter_schema=deployment.schemas["dead_letter"], timeout_s=1
    )  # never started
    app = create_app(Context(deployment, KeyRing({}), publisher))
    document = openapi.document(app.router)
    served = openapi.routes(app.router)
    assert len(served) >= 10
    for method, path in served:
        operation = document["paths"][path][method.lower()]
        assert operation["summary"], (method, path)
        assert {"200", "201", "202", "204"} & set(operation["responses"]), (method, path)
    assert document["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == set(served)
