"""Frozen, typed settings in sections, read from SLUICE_* environment variables."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, get_type_hints

from app.errors import SettingsError

Network = IPv4Network | IPv6Network
# OpenTelemetry's own variable for the collector, read as SLUICE_OTLP_ENDPOINT's fallback.
OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
Networks = tuple[Network, ...]


def _setting(env: str, default: Any, doc: str) -> Any:
    """A field read from the environment variable `env`; `doc` is what the docs' settings table says of it."""
    return field(default=default, metadata={"env": env, "doc": doc})


def parse_networks(text: str) -> Networks:
    """Comma-separated CIDR networks (`127.0.0.0/8,10.1.0.0/16`); ValueError naming the bad one."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (CIDR, e.g. 127.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """The cluster, the local broker `sluice kafka` runs, and how Sluice names and sizes its topics."""

    bootstrap_servers: str = _setting(
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS",
        "",
        "Kafka bootstrap servers (host:port,...). Empty: the local broker. KAFKA_BOOTSTRAP_SERVERS is read too.",
    )
    port: int = _setting("SLUICE_KAFKA_PORT", 9092, "Port of the local broker that `sluice kafka` runs.")
    controller_port: int = _setting(
        "SLUICE_KAFKA_CONTROLLER_PORT",
        0,
        "KRaft controller port of the local broker (of its first node with --nodes); 0 means right after the "
        "brokers' ports (the port + 1 for one node).",
    )
    data_dir: Path = _setting(
        "SLUICE_KAFKA_DATA_DIR",
        Path("var/kafka"),
        "Log dir of the local broker, reused; with --nodes, a node-<n> folder in it per node.",
    )
    home: Path = _setting(
        "SLUICE_KAFKA_HOME", Path.home() / ".cache" / "sluice" / "kafka", "Cache of the Kafka jars from Maven Central."
    )
    heap: str = _setting("SLUICE_KAFKA_HEAP", "512m", "JVM heap of the local broker (-Xmx).")
    namespace: str = _setting(
        "SLUICE_NAMESPACE", "", "Prefix of every Kafka topic and of the consumer group; isolates deployments."
    )
    partitions: int = _setting(
        "SLUICE_PARTITIONS", 4, "Partitions of every event topic, the effects topic and the state tables."
    )
    replication_factor: int = _setting(
        "SLUICE_REPLICATION_FACTOR",
        0,
        "Replication factor of the topics Sluice creates. 0: automatic, 3, or the cluster's broker count if fewer.",
    )
    min_insync_replicas: int = _setting(
        "SLUICE_MIN_INSYNC_REPLICAS",
        0,
        "min.insync.replicas of the topics Sluice creates: copies a write needs before Kafka acknowledges it. "
        "0: automatic, the replication factor - 1, at least 1.",
    )
    fetch_max_wait_ms: int = _setting(
        "SLUICE_FETCH_MAX_WAIT_MS",
        100,
        "Longest a consumer's fetch waits at the broker for records: latency a quiet partition may add.",
    )

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use: the given one, else the local broker's."""
        return self.bootstrap_servers or f"127.0.0.1:{self.port}"

    @property
    def controller(self) -> int:
        """The local broker's controller port."""
        return self.controller_port or self.port + 1

    def topic(self, name: str) -> str:
        """The Kafka topic name of a logical stream, inside this deployment's namespace."""
        return f"{self.namespace}.{name}" if self.namespace else name


@dataclass(frozen=True, slots=True)
class PathSettings:
    """Where the topic files and schemas are read from."""

    topics_dir: Path = _setting("SLUICE_TOPICS_DIR", Path("topics"), "Folder of topic files (<slug>.yaml).")
    schemas_dir: Path = _setting("SLUICE_SCHEMAS_DIR", Path("schemas"), "Folder of Avro schemas (*.avsc).")


@dataclass(frozen=True, slots=True)
class KeySettings:
    """API keys: plain ones for development, a file of hashes in production."""

    api_keys: str = _setting(
        "SLUICE_API_KEYS", "", "Development keys, key1:tenant1,key2:tenant2 (plain text); `make run` sets one."
    )
    keys_file: Path | None = _setting("SLUICE_KEYS_FILE", None, "YAML file of SHA-256 hashed API keys (production).")
    token_secret: str = _setting(
        "SLUICE_TOKEN_SECRET",
        "",
        "Secret (at least 32 bytes) that signs the access tokens of POST /login; the same in every producer. "
        "Empty: no tokens, /login answers 503. `make run` keeps one in var/token_secret.",
    )
    token_ttl_s: int = _setting("SLUICE_TOKEN_TTL_S", 3600, "How long an access token from POST /login is valid.")
    api_key: str = _setting(
        "SLUICE_API_KEY", "", "The key `sluice dlq` sends to the producer; empty: the first of SLUICE_API_KEYS."
    )


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """The HTTP producer."""

    host: str = _setting("SLUICE_PRODUCER_HOST", "127.0.0.1", "Interface the HTTP producer listens on.")
    port: int = _setting("SLUICE_PRODUCER_PORT", 8080, "Port the HTTP producer listens on.")
    processes: int = _setting(
        "SLUICE_PRODUCER_PROCESSES", 1, "Producer processes sharing the port (SO_REUSEPORT); one per spare core."
    )
    max_body_bytes: int = _setting(
        "SLUICE_MAX_BODY_BYTES", 1024 * 1024, "Largest request body, inflated (413 above it)."
    )
    publish_timeout_s: float = _setting(
        "SLUICE_PUBLISH_TIMEOUT_S", 10.0, "How long the producer waits for Kafka's ack before a 503."
    )
    effect_timeout_s: float = _setting(
        "SLUICE_EFFECT_TIMEOUT_S", 5.0, "How long the gamification endpoints wait for effects before a 202."
    )
    idle_timeout_s: float = _setting(
        "SLUICE_HTTP_IDLE_TIMEOUT_S",
        30.0,
        "A connection is closed when it has not sent a request's whole headers this long after it opened "
        "or after its last answer: slow headers and idle keep-alive connections alike.",
    )
    body_timeout_s: float = _setting(
        "SLUICE_HTTP_BODY_TIMEOUT_S",
        30.0,
        "Longest a request body may stall between two reads before the request is answered 408 and closed.",
    )
    max_connections: int = _setting(
        "SLUICE_HTTP_MAX_CONNECTIONS",
        2000,
        "Connections one producer process holds at once; past it a new connection gets a 503 and is closed.",
    )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The Faust worker: its group, its state and how it batches."""

    host: str = _setting("SLUICE_WORKER_HOST", "127.0.0.1", "Interface of the worker's web server.")
    port: int = _setting("SLUICE_WORKER_PORT", 6066, "Port of the worker's web server.")
    app_id: str = _setting(
        "SLUICE_APP_ID", "sluice", "Faust application id: the consumer group and the changelog topics' prefix."
    )
    data_dir: Path = _setting("SLUICE_DATA_DIR", Path("var"), "Folder of the worker's state (RocksDB).")
    session_timeout_s: float = _setting(
        "SLUICE_WORKER_SESSION_TIMEOUT_S",
        10.0,
        "Consumer group session timeout: how soon a dead worker's partitions move (the broker's minimum is 6).",
    )
    batch_size: int = _setting(
        "SLUICE_WORKER_BATCH_SIZE", 1000, "Most events the worker dedupes and applies as one batch."
    )
    batch_wait_s: float = _setting(
        "SLUICE_WORKER_BATCH_WAIT_S",
        0.0,
        "Longest the worker waits to fill a batch: latency it may add to each event. A batch is otherwise "
        "what arrived while the last one was applied.",
    )
    cached_users: int = _setting(
        "SLUICE_WORKER_CACHED_USERS",
        50000,
        "User records the worker keeps parsed between batches (0: none), forgotten at every rebalance; "
        "about 1.2 KB each for a small state.",
    )
    commit_interval_s: float = _setting(
        "SLUICE_WORKER_COMMIT_INTERVAL_S",
        1.0,
        "How often the worker commits its consumer offsets; a crash replays at most this much, deduped.",
    )
    fetch_max_wait_ms: int = _setting(
        "SLUICE_WORKER_FETCH_MAX_WAIT_MS",
        100,
        "Longest the worker's fetch waits at the broker for records; faust's own 1500 adds up to that to latency.",
    )
    dedupe_window_s: int = _setting(
        "SLUICE_DEDUPE_WINDOW_S", 7 * 24 * 3600, "How long an event id is remembered for deduplication."
    )
    compiled: bool = _setting(
        "SLUICE_WORKER_COMPILED",
        True,
        "Apply events with the compiled core when it is built and covers every topic's rules (else the Python "
        "engine, with a log line saying why); false: always the Python engine, the reference.",
    )


@dataclass(frozen=True, slots=True)
class SchedulingSettings:
    """Scheduled events and wait groups."""

    wait_group_retention_s: int = _setting(
        "SLUICE_WAIT_GROUP_RETENTION_S",
        7 * 24 * 3600,
        "How long an ended wait group instance is kept after its deadline: events naming it are accepted "
        "(and count for nothing) until then, and refused after.",
    )


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Webhook delivery and pull subscriptions."""

    timeout_s: float = _setting(
        "SLUICE_WEBHOOK_TIMEOUT_S", 5.0, "How long one webhook POST may take before it counts as failed."
    )
    retry_s: float = _setting(
        "SLUICE_WEBHOOK_RETRY_S",
        3600.0,
        "How long a failing webhook delivery is retried before it is parked on parked.<tenant>.<subscription>.",
    )
    backoff_base_s: float = _setting(
        "SLUICE_WEBHOOK_BACKOFF_BASE_S", 0.5, "Longest wait before the first webhook retry; doubles each time."
    )
    backoff_max_s: float = _setting("SLUICE_WEBHOOK_BACKOFF_MAX_S", 60.0, "Longest wait between two webhook retries.")
    max_attempts: int = _setting(
        "SLUICE_WEBHOOK_MAX_ATTEMPTS",
        0,
        "Most attempts of one webhook delivery before it is parked; 0: as many as SLUICE_WEBHOOK_RETRY_S allows.",
    )
    disable_after_s: float = _setting(
        "SLUICE_WEBHOOK_DISABLE_AFTER_S",
        86400.0,
        "A webhook subscription whose endpoint has answered no 2xx for this long is disabled, with a notice; 0: never.",
    )
    private_networks: Networks = _setting(
        "SLUICE_WEBHOOK_PRIVATE_NETWORKS",
        (),
        "Private networks webhooks may reach besides public addresses, as CIDRs (a,b): 127.0.0.0/8 for a "
        "receiver on this machine. Empty: public addresses only.",
    )
    pull_lock_s: float = _setting(
        "SLUICE_PULL_LOCK_S",
        30.0,
        "How long an event pulled from a pull subscription stays locked to its puller; not acked by then, "
        "it is handed out again.",
    )


@dataclass(frozen=True, slots=True)
class AnalyticsSettings:
    """Windowed tables: where the producer asks, and how often the worker sweeps."""

    workers: str = _setting(
        "SLUICE_ANALYTICS_WORKERS",
        "",
        "Worker web URLs (http://host:port,...) the producer asks where table partitions live; empty: the "
        "worker's host and port.",
    )
    query_timeout_s: float = _setting(
        "SLUICE_ANALYTICS_QUERY_TIMEOUT_S", 5.0, "How long a table query waits for every partition before a 503."
    )
    sweep_s: float = _setting(
        "SLUICE_ANALYTICS_SWEEP_S", 10.0, "How often each worker deletes windows past their retention."
    )


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Rate limits of a key and of a tenant when the keys file declares none; 0 means no limit."""

    key_requests_per_s: float = _setting(
        "SLUICE_KEY_REQUESTS_PER_S", 0.0, "Requests per second one API key may make (429 past it); 0: no limit."
    )
    key_events_per_s: float = _setting(
        "SLUICE_KEY_EVENTS_PER_S", 0.0, "Events per second one API key may send (429 past it); 0: no limit."
    )
    tenant_requests_per_s: float = _setting(
        "SLUICE_TENANT_REQUESTS_PER_S", 0.0, "Requests per second all of a tenant's keys may make; 0: no limit."
    )
    tenant_events_per_s: float = _setting(
        "SLUICE_TENANT_EVENTS_PER_S", 0.0, "Events per second all of a tenant's keys may send; 0: no limit."
    )
    burst_s: float = _setting(
        "SLUICE_RATE_BURST_S", 1.0, "Seconds of a limit a key or tenant may send at once after a quiet spell."
    )


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    """Prometheus metrics and OpenTelemetry traces."""

    metrics: bool = _setting(
        "SLUICE_METRICS",
        True,
        "Count and serve /metrics (on the producer's port, the worker's web port and the dispatcher's metrics "
        "port); off: neither.",
    )
    metrics_token: str = _setting(
        "SLUICE_METRICS_TOKEN",
        "",
        "Bearer token /metrics requires (Authorization: Bearer <token>); empty: /metrics is open, as most "
        "exporters are.",
    )
    metrics_max_tenants: int = _setting(
        "SLUICE_METRICS_MAX_TENANTS",
        100,
        'Distinct tenant label values one process exports per metric; the tenants after them count as "other".',
    )
    deliver_metrics_host: str = _setting(
        "SLUICE_DELIVER_METRICS_HOST", "127.0.0.1", "Interface the dispatcher's /metrics listens on."
    )
    deliver_metrics_port: int = _setting(
        "SLUICE_DELIVER_METRICS_PORT", 9465, "Port of the dispatcher's (`sluice deliver`) /metrics; 0: not served."
    )
    otlp_endpoint: str = _setting(
        "SLUICE_OTLP_ENDPOINT",
        "",
        "OTLP/HTTP collector base URL (spans go to <url>/v1/traces). Empty: no span is exported, and trace "
        "context is only passed along. `OTEL_EXPORTER_OTLP_ENDPOINT` is read too.",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob Sluice has, in sections; each field names its own environment variable."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    log_level: str = _setting("SLUICE_LOG_LEVEL", "info", "debug, info, warning or error.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        sections: dict[str, Any] = {}
        for name, section in _sections():
            values = {
                f.name: _convert(f.metadata["env"], env[f.metadata["env"]], hint)
                for f, hint in _fields(section)
                if env.get(f.metadata["env"], "") != ""
            }
            if section is KafkaSettings and "bootstrap_servers" not in values and env.get("KAFKA_BOOTSTRAP_SERVERS"):
                values["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
            if section is ObservabilitySettings and "otlp_endpoint" not in values and env.get(OTEL_ENDPOINT):
                values["otlp_endpoint"] = env[OTEL_ENDPOINT].strip()
            sections[name] = section(**values)
        log_level = env.get("SLUICE_LOG_LEVEL") or "info"
        settings = cls(**sections, log_level=log_level.strip().lower())
        settings._check()
        return settings

    @classmethod
    def documented(cls) -> Iterator[tuple[str, str, Any, str]]:
        """(section, environment variable, default, doc) of every setting, in declaration order."""
        for name, section in _sections():
            for f, _ in _fields(section):
                yield name, f.metadata["env"], f.default, f.metadata["doc"]
        log_level = next(f for f in dataclasses.fields(cls) if f.name == "log_level")
        yield "", log_level.metadata["env"], log_level.default, log_level.metadata["doc"]

    @classmethod
    def env_names(cls) -> frozenset[str]:
        """Every environment variable Sluice reads."""
        return frozenset({env for _, env, _, _ in cls.documented()} | {"KAFKA_BOOTSTRAP_SERVERS", OTEL_ENDPOINT})

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some fields of one section changed (command-line flags over the environment)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})

    @property
    def group_id(self) -> str:
        """The workers' consumer group, inside the namespace."""
        return self.kafka.topic(self.worker.app_id)

    @property
    def worker_urls(self) -> list[str]:
        """Where the producer asks the workers about windowed tables."""
        given = [url.strip().rstrip("/") for url in self.analytics.workers.split(",") if url.strip()]
        return given or [f"http://{self.worker.host}:{self.worker.port}"]

    def _check(self) -> None:
        namespace = self.kafka.namespace
        if namespace and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", namespace):
            raise SettingsError(
                "SLUICE_NAMESPACE: use letters, digits, '_' or '-' (at most 64)", field="SLUICE_NAMESPACE"
            )
        for env, value in (
            ("SLUICE_PARTITIONS", self.kafka.partitions),
            ("SLUICE_MAX_BODY_BYTES", self.producer.max_body_bytes),
            ("SLUICE_PRODUCER_PROCESSES", self.producer.processes),
            ("SLUICE_HTTP_MAX_CONNECTIONS", self.producer.max_connections),
            ("SLUICE_DEDUPE_WINDOW_S", self.worker.dedupe_window_s),
            ("SLUICE_WORKER_BATCH_SIZE", self.worker.batch_size),
            ("SLUICE_WAIT_GROUP_RETENTION_S", self.scheduling.wait_group_retention_s),
            ("SLUICE_PULL_LOCK_S", self.delivery.pull_lock_s),
            ("SLUICE_TOKEN_TTL_S", self.keys.token_ttl_s),
            ("SLUICE_METRICS_MAX_TENANTS", self.observability.metrics_max_tenants),
        ):
            if value < 1:
                raise SettingsError(f"{env}: must be at least 1", field=env)
        limits = self.limits
        for env, rate in (
            ("SLUICE_KEY_REQUESTS_PER_S", limits.key_requests_per_s),
            ("SLUICE_KEY_EVENTS_PER_S", limits.key_events_per_s),
            ("SLUICE_TENANT_REQUESTS_PER_S", limits.tenant_requests_per_s),
            ("SLUICE_TENANT_EVENTS_PER_S", limits.tenant_events_per_s),
        ):
            if rate < 0:
                raise SettingsError(f"{env}: must be 0 (no limit) or more", field=env)
        if limits.burst_s <= 0:
            raise SettingsError("SLUICE_RATE_BURST_S: must be more than 0", field="SLUICE_RATE_BURST_S")
        for env, value in (
            ("SLUICE_REPLICATION_FACTOR", self.kafka.replication_factor),
            ("SLUICE_MIN_INSYNC_REPLICAS", self.kafka.min_insync_replicas),
        ):
            if value < 0:
                raise SettingsError(f"{env}: must be 0 (automatic) or more", field=env)
        # A write would need more copies than a partition has: every acks=all write would fail.
        if 0 < self.kafka.replication_factor < self.kafka.min_insync_replicas:
            env = "SLUICE_MIN_INSYNC_REPLICAS"
            raise SettingsError(f"{env}: must not exceed SLUICE_REPLICATION_FACTOR", field=env)
        # HS256 wants a key as long as its hash (RFC 7518 section 3.2); a shorter one can be brute-forced.
        if self.keys.token_secret and len(self.keys.token_secret.encode()) < 32:
            raise SettingsError("SLUICE_TOKEN_SECRET: must be at least 32 bytes", field="SLUICE_TOKEN_SECRET")
        if self.log_level not in {"debug", "info", "warning", "error"}:
            raise SettingsError("SLUICE_LOG_LEVEL: must be debug, info, warning or error", field="SLUICE_LOG_LEVEL")


def _sections() -> Iterator[tuple[str, Any]]:
    hints = get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if dataclasses.is_dataclass(hints[f.name]):
            yield f.name, hints[f.name]


def _fields(section: Any) -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    hints = get_type_hints(section)
    for f in dataclasses.fields(section):
        yield f, hints[f.name]


def _convert(name: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    try:
        if kind is bool:
            return _switch(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is Path or kind == Path | None:
            return Path(text).expanduser()
        if kind == Networks:
            return parse_networks(text)
    except ValueError as exc:
        expected = {int: "an integer", float: "a number"}.get(kind)
        reason = f"must be {expected}, got {raw!r}" if expected else str(exc)
        raise SettingsError(f"{name}: {reason}", field=name) from None
    return text


def _switch(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"on", "true", "1", "yes"}:
        return True
    if lowered in {"off", "false", "0", "no"}:
        return False
    raise ValueError(f"must be on or off, got {text!r}")


def markdown_table() -> str:
    """The settings table of docs/operations.md, written from each setting's own doc string."""
    rows = ["| variable | section | default | meaning |", "|---|---|---|---|"]
    for section, env, default, doc in Settings.documented():
        rows.append(f"| `{env}` | {section or '(top)'} | {_shown(default)} | {doc.replace('|', '/')} |")
    return "\n".join(rows)


def _shown(default: Any) -> str:
    if default in ("", (), None):
        return "(empty)"
    if isinstance(default, bool):
        return "`on`" if default else "`off`"
    if isinstance(default, Path) and default.is_relative_to(Path.home()):
        return f"`~/{default.relative_to(Path.home())}`"
    return f"`{default}`"
