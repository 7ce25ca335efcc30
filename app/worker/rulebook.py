"""The topic specs the agent applies, swapped for a fresh read of the topic files on SIGHUP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from app.catalog import Catalog, TopicSpec
from app.errors import ConfigError

P = TypeVar("P")

log = logging.getLogger(__name__)


class Rulebook(Generic[P]):
    """New rules apply to the events processed after the swap; each effect names its rules' version.

    `compile` makes the rules' compiled form (app/native), swapped with them; it gives None
    when it does not cover them, and the worker applies them with the Python engine.
    """

    def __init__(self, folder: Path, catalog: Catalog, compile: Callable[[Catalog], P | None] | None = None) -> None:
        self._folder = folder
        self._compile = compile
        self._catalog = catalog
        self.program = compile(catalog) if compile is not None else None

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
        self.program = self._compile(fresh) if self._compile is not None else None
        log.info("rules reloaded: %s", ", ".join(f"{s}@{spec.rules_version}" for s, spec in fresh.items()))
        return True
