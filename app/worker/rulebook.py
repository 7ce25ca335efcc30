"""The topic specs the agent applies, swapped for a fresh read of the topic files on SIGHUP."""

from __future__ import annotations

import logging
from pathlib import Path

from app.catalog import Catalog, TopicSpec
from app.errors import ConfigError

log = logging.getLogger(__name__)


class Rulebook:
    """New rules apply to the events processed after the swap; each effect names its rules' version."""

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self._folder = folder
        self._catalog = catalog

    def __getitem__(self, slug: str) -> TopicSpec:
        return self._catalog[slug]

    def reload(self) -> bool:
        try:
            fresh = Catalog.load(self._folder)
        except ConfigError as exc:
            log.error("topic files not reloaded, the old rules stay: %s", exc.message)
            return False
        if {slug: spec.kafka_topic for slug, spec in fresh.items()} != {
            slug: spec.kafka_topic for slug, spec in self._catalog.items()
        }:
            # The agent subscribed to the topics at start; a new set needs a new worker.
            log.error("topic files not reloaded: the set of topics changed, restart the worker")
            return False
        self._catalog = fresh
        log.info("rules reloaded: %s", ", ".join(f"{s}@{spec.rules_version}" for s, spec in fresh.items()))
        return True
