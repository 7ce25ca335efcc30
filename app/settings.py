"""One frozen, typed settings object read from SLUICE_* environment variables."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from app.delivery.destination import parse_networks
from app.errors import SettingsError

PREFIX = "SLUICE_"


def _setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob Sluice has. The env name of a field is SLUICE_ + its name in upper case."""

    kafka_bootstrap_servers: str = _setting(
        "", "Kafka bootstrap servers (host:port,...). Empty: a local broker (KAFKA_BOOTSTRAP_SERVERS also read)."
    )
    kafka_port: int = _setting(9092, "Port of the local broker that `sluice kafka` runs.")
    kafka_controller_port: int = _setting(0, "KRaft controller port of the local broker; 0 means kafka_port + 1.")
    kafka_data_dir: Path = _setting(Path("var/kafka"), "Log dir of the local broker; reused across starts.")
    kafka_home: Path = _setting(
        Path.home() / ".cache" / "sluice" / "kafka", "Where the Kafka jars from Maven Central are cached."
    )
    kafka_heap: str = _setting("512m", "JVM heap of the local broker (-Xmx).")
    producer_host: str = _setting("127.0.0.1", "Interface the HTTP producer listens on.")
    producer_port: int = _setting(8080, "Port the HTTP producer listens on.")
    producer_processes: int = _setting(
        1, "HTTP producer processes sharing the port (SO_REUSEPORT); one per spare core."
    )
    worker_host: str = _setting("127.0.0.1", "Interface the worker's web server listens on.")
    worker_port: int = _setting(6066, "Port of the worker's web server.")
    worker_session_timeout_s: float = _setting(
        10.0, "Consumer group session timeout: how soon a dead worker's partitions move (6 s at least)."
    )
    worker_batch_size: int = _setting(1000, "Most events the worker dedupes and applies as one batch.")
    worker_batch_wait_s: float = _setting(
        0.0,
        "Longest the worker waits to fill a batch: latency it may add to each event. A batch is "
        "otherwise what arrived while the last one was applied.",
    )
    worker_cached_users: int = _setting(
        50000, "User records the worker keeps parsed between batches (0: none), instead of reading them again."
    )
    worker_commit_interval_s: float = _setting(
        1.0, "How often the worker commits its consumer offsets; a crash replays at most this much, deduped."
    )
    worker_fetch_max_wait_ms: int = _setting(
        100, "Longest the worker's fetch waits at the broker for records; faust's own 1500 adds up to that to latency."
    )
    fetch_max_wait_ms: int = _setting(
        100, "Longest a consumer's fetch waits at the broker for records: latency a quiet partition may add."
    )
    api_keys: str = _setting("", "Development keys: key1:tenant1,key2:tenant2 (plain text).")
    keys_file: Path | None = _setting(None, "YAML file of SHA-256 hashed API keys (production).")
    topics_dir: Path = _setting(Path("topics"), "Folder of topic files (<slug>.yaml).")
    schemas_dir: Path = _setting(Path("schemas"), "Folder of Avro schemas (*.avsc).")
    data_dir: Path = _setting(Path("var"), "Folder for worker state (RocksDB).")
    namespace: str = _setting("", "Prefix for every Kafka topic and the consumer group; isolates deployments.")
    app_id: str = _setting("sluice", "Faust application id (consumer group and changelog topic prefix).")
    partitions: int = _setting(4, "Partitions of every event topic, the effects topic and the state tables.")
    replication_factor: int = _setting(1, "Replication factor of the topics Sluice creates.")
    max_body_bytes: int = _setting(1024 * 1024, "Largest request body the producer reads (413 above it).")
    publish_timeout_s: float = _setting(10.0, "How long the producer waits for Kafka's ack before a 503.")
    effect_timeout_s: float = _setting(5.0, "How long the gamification endpoints wait for effects before a 202.")
    dedupe_window_s: int = _setting(7 * 24 * 3600, "How long an event id is remembered for deduplication.")
    wait_group_retention_s: int = _setting(
        7 * 24 * 3600,
        "How long a wait group instance is kept after its deadline: events naming it are accepted (and "
        "count for nothing) until then, and refused after.",
    )
    log_level: str = _setting("info", "debug, info, warning or error.")
    webhook_timeout_s: float = _setting(5.0, "How long one webhook POST may take before it counts as failed.")
    webhook_retry_s: float = _setting(
        3600.0, "How long a failing webhook delivery is retried before it is parked on the dead-letter topic."
    )
    webhook_backoff_base_s: float = _setting(0.5, "Longest wait before the first webhook retry; doubles each time.")
    webhook_backoff_max_s: float = _setting(60.0, "Longest wait between two webhook retries.")
    webhook_private_networks: str = _setting(
        "",
        "Private networks webhooks may reach besides public addresses, as CIDRs (a,b): 127.0.0.0/8 for a "
        "receiver on this machine. Empty: public addresses only.",
    )
    analytics_workers: str = _setting(
        "", "Worker web URLs the producer asks where table partitions live (a,b); empty: the worker host and port."
    )
    analytics_query_timeout_s: float = _setting(5.0, "How long a table query waits for the workers before a 503.")
    analytics_sweep_s: float = _setting(10.0, "How often the worker deletes windows past their retention.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(name, raw, hints[f.name])
        if "kafka_bootstrap_servers" not in values and env.get("KAFKA_BOOTSTRAP_SERVERS"):
            values["kafka_bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        settings = cls(**values)
        settings._check()
        return settings

    @classmethod
    def env_names(cls) -> frozenset[str]:
        """Every environment variable Sluice reads."""
        names = {PREFIX + f.name.upper() for f in dataclasses.fields(cls)}
        return frozenset(names | {"KAFKA_BOOTSTRAP_SERVERS"})

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use: the given one, else the local broker's."""
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def controller_port(self) -> int:
        return self.kafka_controller_port or self.kafka_port + 1

    def kafka_topic(self, name: str) -> str:
        """The Kafka topic name of a logical stream, inside this deployment's namespace."""
        return f"{self.namespace}.{name}" if self.namespace else name

    @property
    def worker_urls(self) -> list[str]:
        """Where the producer asks the workers about windowed tables."""
        given = [url.strip().rstrip("/") for url in self.analytics_workers.split(",") if url.strip()]
        return given or [f"http://{self.worker_host}:{self.worker_port}"]

    @property
    def group_id(self) -> str:
        return self.kafka_topic(self.app_id)

    def _check(self) -> None:
        if self.namespace and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.namespace):
            raise SettingsError(
                "SLUICE_NAMESPACE: use letters, digits, '_' or '-' (at most 64)", field="SLUICE_NAMESPACE"
            )
        for name in (
            "partitions",
            "replication_factor",
            "max_body_bytes",
            "dedupe_window_s",
            "wait_group_retention_s",
            "producer_processes",
            "worker_batch_size",
        ):
            if getattr(self, name) < 1:
                env = PREFIX + name.upper()
                raise SettingsError(f"{env}: must be at least 1", field=env)
        try:
            parse_networks(self.webhook_private_networks)
        except ValueError as exc:
            env = "SLUICE_WEBHOOK_PRIVATE_NETWORKS"
            raise SettingsError(f"{env}: {exc}", field=env) from None
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError("SLUICE_LOG_LEVEL: must be debug, info, warning or error", field="SLUICE_LOG_LEVEL")


def _convert(name: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is Path or kind == Path | None:
            return Path(text).expanduser()
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name}: must be {expected}, got {raw!r}", field=name) from None
    return text
