"""The composition root: what a process loads once (topic files, schemas, topic names) from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.kafka.topology import Topology
from app.scheduling.send_at import Routes
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment as a process sees it; every entry point builds it with `load` and passes parts on."""

    settings: Settings
    catalog: Catalog
    schemas: SchemaSet
    topology: Topology
    routes: Routes  # where an event goes now, or when its send_at is due

    @classmethod
    def load(cls, settings: Settings, tenants: frozenset[str] = frozenset()) -> Deployment:
        """Read the topic files and schemas; `tenants` are those with keys here (their dead-letter topics)."""
        catalog = Catalog.load(settings.paths.topics_dir)
        schemas = SchemaSet.load(settings.paths.schemas_dir)
        topology = Topology.of(settings.kafka, catalog, tenants=tenants)
        return cls(settings, catalog, schemas, topology, topology.routes(schemas))
