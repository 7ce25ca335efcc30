"""Load topics/*.yaml once into frozen TopicSpec objects; nothing else reads those files."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.analytics.spec import TableSpec, parse_tables
from app.core.subscription import Subscription, parse_subscription
from app.errors import ConfigError, ValidationError
from app.rules import Rule, parse_rules, rules_version

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
KNOWN_KEYS = {"description", "kafka_topic", "endpoint", "audiences", "rules", "subscriptions", "tables"}
# Dialect endpoints without a topic in their path; a topic file claims one with `endpoint:`.
ENDPOINTS = ("usage", "analytics", "gamification", "segment")
AUDIENCE = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    slug: str
    kafka_topic: str
    description: str
    rules: tuple[Rule, ...]
    rules_version: str
    endpoint: str | None = None
    # audience -> event types registered for it; empty means any audience and any type.
    audiences: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Declared subscriptions to this topic's events or effects, each for one tenant.
    subscriptions: tuple[Subscription, ...] = ()
    tables: tuple[TableSpec, ...] = ()  # windowed tables for analysts (app/analytics/)


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
        endpoints: dict[str, str] = {}
        for spec in specs:
            if spec.endpoint is None:
                continue
            other = endpoints.setdefault(spec.endpoint, spec.slug)
            if other != spec.slug:
                raise ConfigError(
                    f"{folder}: topics {other!r} and {spec.slug!r} both claim endpoint {spec.endpoint!r}",
                    field="endpoint",
                )
        declared: dict[str, str] = {}
        for spec in specs:
            for sub in spec.subscriptions:
                other = declared.setdefault(sub.key, spec.slug)
                if other != spec.slug or sum(s.key == sub.key for s in spec.subscriptions) > 1:
                    raise ConfigError(
                        f"{folder}: subscription {sub.name!r} of tenant {sub.tenant!r} is declared twice",
                        field="subscriptions",
                    )
        tables: dict[str, str] = {}
        for spec in specs:
            for table in spec.tables:
                other = tables.setdefault(table.name, spec.slug)
                if other != spec.slug:
                    raise ConfigError(
                        f"{folder}: topics {other!r} and {spec.slug!r} both declare table {table.name!r}",
                        field="tables.name",
                    )
        return cls({spec.slug: spec for spec in specs})

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """Every subscription the topic files declare."""
        return tuple(sub for spec in self._specs.values() for sub in spec.subscriptions)

    def tables(self) -> dict[str, TableSpec]:
        """Every windowed table, by name (names are unique across topics)."""
        return {table.name: table for spec in self._specs.values() for table in spec.tables}

    def for_endpoint(self, endpoint: str) -> TopicSpec | None:
        """The topic a slug-less dialect endpoint writes to, if a topic file claims it."""
        return next((spec for spec in self._specs.values() if spec.endpoint == endpoint), None)


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
    endpoint = raw.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS:
        raise ConfigError(f"{path}: 'endpoint' must be one of {', '.join(ENDPOINTS)}", field="endpoint")
    return TopicSpec(
        slug=slug,
        endpoint=endpoint,
        audiences=_parse_audiences(raw.get("audiences"), path),
        kafka_topic=kafka_topic,
        description=description,
        rules=parse_rules(raw.get("rules"), source=str(path)),
        rules_version=rules_version(raw.get("rules") or []),
        subscriptions=_parse_subscriptions(raw.get("subscriptions"), slug, path),
        tables=parse_tables(raw.get("tables"), slug=slug, source=str(path)),
    )


def _parse_subscriptions(raw: Any, slug: str, path: Path) -> tuple[Subscription, ...]:
    """`subscriptions: [{tenant, name, stream?, filter?, url?, secret_env?}]`; the topic is this file's."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: 'subscriptions' must be a list", field="subscriptions")
    subscriptions: list[Subscription] = []
    for index, entry in enumerate(raw):
        where = f"subscriptions[{index}]."
        body = dict(entry) if isinstance(entry, dict) else entry
        tenant = body.pop("tenant", None) if isinstance(body, dict) else None
        secret_env = body.pop("secret_env", None) if isinstance(body, dict) else None
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(f"{path}: {where}tenant: is required", field=where + "tenant")
        secret = None
        if isinstance(body, dict) and "url" in body:
            secret = os.environ.get(secret_env) if isinstance(secret_env, str) else None
            if not secret:
                raise ConfigError(
                    f"{path}: {where}secret_env: must name a set environment variable holding the webhook secret",
                    field=where + "secret_env",
                )
        try:
            sub = parse_subscription(
                {"topic": slug, **body} if isinstance(body, dict) else body,
                tenant=tenant,
                topics=frozenset({slug}),
                secret=secret,
                path=where,
            )
        except ValidationError as exc:
            raise ConfigError(f"{path}: {exc.field}: {exc.message}", field=exc.field) from None
        subscriptions.append(dataclasses.replace(sub, declared=True))
    return tuple(subscriptions)


def _parse_audiences(raw: Any, path: Path) -> dict[str, frozenset[str]]:
    """`audiences: {student: [lesson_completed, ...], teacher: [...]}`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: 'audiences' must map each audience to its event types", field="audiences")
    audiences: dict[str, frozenset[str]] = {}
    for name, types in raw.items():
        if not isinstance(name, str) or not AUDIENCE.fullmatch(name):
            raise ConfigError(
                f"{path}: audience {name!r} must be lower-case snake_case, at most 32 characters", field="audiences"
            )
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            raise ConfigError(f"{path}: audiences.{name} must be a list of event types", field=f"audiences.{name}")
        audiences[name] = frozenset(types)
    return audiences
