"""Load topics/*.yaml once into frozen TopicSpec objects; nothing else reads those files."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.errors import ConfigError
from app.rules import Rule, parse_rules, rules_version

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
KNOWN_KEYS = {"description", "kafka_topic", "rules"}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    slug: str
    kafka_topic: str
    description: str
    rules: tuple[Rule, ...]
    rules_version: str


class Catalog(Mapping[str, TopicSpec]):
    """Every declared topic, by slug."""

    def __init__(self, specs: Mapping[str, TopicSpec]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, slug: str) -> TopicSpec:
        return self._specs[slug]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @classmethod
    def load(cls, folder: Path) -> Catalog:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: topics folder not found", field="SLUICE_TOPICS_DIR")
        specs = [load_topic(path) for path in sorted(folder.glob("*.yaml"))]
        if not specs:
            raise ConfigError(f"{folder}: no topic files (*.yaml)", field="SLUICE_TOPICS_DIR")
        kafka_topics: dict[str, str] = {}
        for spec in specs:
            other = kafka_topics.setdefault(spec.kafka_topic, spec.slug)
            if other != spec.slug:
                raise ConfigError(
                    f"{folder}: topics {other!r} and {spec.slug!r} share kafka_topic {spec.kafka_topic!r}",
                    field="kafka_topic",
                )
        return cls({spec.slug: spec for spec in specs})


def load_topic(path: Path) -> TopicSpec:
    slug = path.stem
    if not SLUG.fullmatch(slug):
        raise ConfigError(f"{path}: file name must be a slug (lower-case letters, digits, '-' or '_')", field="slug")
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", field=None) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of settings", field=None)
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(KNOWN_KEYS))}", field=unknown[0]
        )
    kafka_topic = raw.get("kafka_topic", f"events.{slug}")
    if not isinstance(kafka_topic, str) or not KAFKA_NAME.fullmatch(kafka_topic):
        raise ConfigError(
            f"{path}: 'kafka_topic' must be a Kafka topic name (letters, digits, '.', '_', '-')",
            field="kafka_topic",
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}: 'description' must be a string", field="description")
    return TopicSpec(
        slug=slug,
        kafka_topic=kafka_topic,
        description=description,
        rules=parse_rules(raw.get("rules"), source=str(path)),
        rules_version=rules_version(raw.get("rules") or []),
    )
