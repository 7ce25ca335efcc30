"""/openapi.json describes every route the producer serves."""

from __future__ import annotations

from pathlib import Path

from app.producer import openapi
from app.producer.publisher import Publisher
from app.producer.server import Context, create_app
from app.schemas import SchemaSet
from app.settings import Settings
from app.tenants import KeyRing
from app.topics import Catalog
from app.topology import Topology

REPO = Path(__file__).resolve().parents[2]


async def test_every_route_is_in_the_document() -> None:
    settings = Settings.from_env({})
    catalog = Catalog.load(REPO / "topics")
    schemas = SchemaSet.load(REPO / "schemas")
    publisher = Publisher("127.0.0.1:1", dead_letter_schema=schemas["dead_letter"], timeout_s=1)  # never started
    context = Context(settings, catalog, Topology.of(settings, catalog), schemas, KeyRing({}), publisher)
    app = create_app(settings, context)
    document = openapi.document(app.router)
    served = openapi.routes(app.router)
    assert len(served) >= 10
    for method, path in served:
        operation = document["paths"][path][method.lower()]
        assert operation["summary"], (method, path)
        assert {"200", "201", "202"} & set(operation["responses"]), (method, path)
    assert document["openapi"] == "3.1.0"
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == set(served)
