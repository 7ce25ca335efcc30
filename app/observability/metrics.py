"""Every metric Sluice exports, with bounded labels; read across producer processes in multiprocess mode."""

from __future__ import annotations

import bisect
import hmac
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# prometheus_client reads it when it is imported: a process started with it set writes its samples
# to files there, and a scrape of any one process reads every process's files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"  # the tenant label of every tenant past the cap
UNKNOWN = "unknown"  # the tenant label of a request refused before its tenant is known

# Latencies from a millisecond to ten seconds: a publish, an apply, an effect's delay, a webhook's answer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BODY_BUCKETS = (256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0)
BATCH_BUCKETS = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)


class TenantLabels:
    """At most `most` distinct tenant label values in this process; every tenant after them is `other`.

    A label value is a time series in Prometheus, kept for as long as it is scraped: a deployment of
    ten thousand tenants must not become ten thousand series per metric.
    """

    __slots__ = ("_most", "_seen")

    def __init__(self, most: int) -> None:
        self._most = most
        self._seen: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._seen:
            return tenant
        if len(self._seen) < self._most:
            self._seen.add(tenant)
            return tenant
        return OTHER


class BatchHistogram(Collector):
    """A histogram observed a batch of values at a time, in one process and one thread (the worker's loop).

    prometheus_client's Histogram takes a lock per observation: 2.9 µs a value on the 2-core bench
    machine, where the worker spends about 125 µs an event; a bisect here is a tenth of that.
    Not for multiprocess mode, whose files only prometheus_client's own metrics write.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name, self._documentation, self._bounds = name, documentation, buckets
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bound
        self._sum = 0.0
        REGISTRY.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds, total = self._counts, self._bounds, 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1  # the first bound >= value: `le` is inclusive
            total += value
        self._sum += total

    def collect(self) -> Iterable[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(_le, self._bounds), "+Inf"), self._counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=self._sum)


def _le(bound: float) -> str:
    return repr(float(bound))


# The producer's.
HTTP_REQUESTS = Counter(
    "sluice_http_requests_total",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_BODY = Histogram(
    "sluice_http_request_body_bytes",
    "Size of request bodies as read (inflated), by route pattern.",
    ["route"],
    buckets=BODY_BUCKETS,
)
EVENTS_ACCEPTED = Counter(
    "sluice_events_accepted_total", "Events written to Kafka, by dialect and tenant.", ["dialect", "tenant"]
)
EVENTS_REFUSED = Counter(
    "sluice_events_refused_total",
    "Events refused, by dialect, tenant and reason (the error code); a request refused whole counts once.",
    ["dialect", "tenant", "reason"],
)
RATE_LIMITED = Counter(
    "sluice_rate_limited_total",
    "Requests refused 429 by a rate limit, by tenant and limit (requests_per_s, events_per_s).",
    ["tenant", "limit"],
)
PUBLISH_DURATION = Histogram(
    "sluice_publish_duration_seconds",
    "From queueing a request's records to Kafka's acknowledgement of them all.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_ERRORS = Counter(
    "sluice_publish_errors_total", "Writes Kafka did not acknowledge (each answered 503), by error.", ["error"]
)
CONNECTIONS_REFUSED = Counter(
    "sluice_http_connections_refused_total", "Connections answered 503 past SLUICE_HTTP_MAX_CONNECTIONS."
)
SSE_STREAMS = Gauge("sluice_sse_streams", "Server-sent event streams open.", multiprocess_mode="livesum")

# The worker's.
EVENTS_APPLIED = Counter("sluice_worker_events_applied_total", "Events the rules ran on, once each.")
DUPLICATES_DROPPED = Counter(
    "sluice_worker_duplicates_dropped_total", "Events dropped as a repeat of an event id already applied."
)
RULES_FIRED = Counter("sluice_worker_rules_fired_total", "Rules that fired, by topic and rule id.", ["topic", "rule"])
EFFECTS_WRITTEN = Counter("sluice_worker_effects_written_total", "Effect records written to the effects topic.")
BATCH_EVENTS = Histogram("sluice_worker_batch_events", "Events in one applied batch.", buckets=BATCH_BUCKETS)
BATCH_DURATION = Histogram(
    "sluice_worker_batch_duration_seconds",
    "From a batch's first read to Kafka's acknowledgement of everything it wrote.",
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_EFFECT = BatchHistogram(
    "sluice_worker_event_to_effect_seconds",
    "From the producer's receipt of an event (received_at) to its effect written in Kafka.",
    LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "sluice_worker_consumer_lag_records",
    "Records of a partition this worker owns that it has not applied yet (the log's end minus its position).",
    ["topic", "partition"],
)
REBALANCES = Counter("sluice_worker_rebalances_total", "Consumer group rebalances this worker took part in.")
RECOVERY_RECOVERED = Gauge(
    "sluice_worker_recovery_recovered_records", "Changelog records replayed into local state so far this recovery."
)
RECOVERY_TOTAL = Gauge(
    "sluice_worker_recovery_records", "Changelog records this worker's recovery has to replay (0 when none runs)."
)

# The consumer group's, read from the broker by whoever is scraped: it is there while every worker is down.
GROUP_LAG_NAME = "sluice_consumer_group_lag_records"

# The dispatcher's (`sluice deliver`).
DELIVERIES = Counter(
    "sluice_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, failed, gone) and status class (2xx, 4xx, 5xx, error).",
    ["outcome", "status_class"],
)
DELIVERY_ATTEMPT = Histogram(
    "sluice_delivery_attempt_duration_seconds", "One webhook POST, from connect to answer.", buckets=LATENCY_BUCKETS
)
DELIVERY_RETRIES = Counter("sluice_delivery_retries_total", "Webhook deliveries scheduled again after a failure.")
DELIVERIES_PARKED = Counter(
    "sluice_deliveries_parked_total", "Webhook deliveries given up on and parked, by tenant.", ["tenant"]
)
SUBSCRIPTION_BACKLOG = Gauge(
    "sluice_subscription_backlog_records",
    "Records a webhook subscription has yet to deliver, by tenant and subscription.",
    ["tenant", "subscription"],
)


def status_class(status: int | None) -> str:
    """`2xx`, `4xx`, ... of an HTTP status; `error` when no answer came (refused, reset, timed out)."""
    return "error" if status is None else f"{status // 100}xx"


class Backlogs:
    """The dispatcher's per-subscription backlog gauge, its tenant label bounded: a subscription of a
    tenant past the cap is counted under tenant and subscription `other`, summed."""

    def __init__(self, tenants: TenantLabels) -> None:
        self._tenants = tenants
        self._other: dict[tuple[str, str], float] = {}

    def set(self, tenant: str, subscription: str, records: int) -> None:
        label = self._tenants(tenant)
        if label != OTHER:
            SUBSCRIPTION_BACKLOG.labels(label, subscription).set(records)
            return
        self._other[(tenant, subscription)] = records
        SUBSCRIPTION_BACKLOG.labels(OTHER, OTHER).set(sum(self._other.values()))


def tenant_totals(tenant: str) -> dict[str, float]:
    """A tenant's accepted and refused events, summed over every producer process (0.0 if it has none).

    A tenant past SLUICE_METRICS_MAX_TENANTS in a process is counted there as `other`, not by name.
    """
    totals = {"events_accepted": 0.0, "events_refused": 0.0}
    names = {"sluice_events_accepted_total": "events_accepted", "sluice_events_refused_total": "events_refused"}
    for family in registry().collect():
        for sample in family.samples:
            key = names.get(sample.name)
            if key is not None and sample.labels.get("tenant") == tenant:
                totals[key] += sample.value
    return totals


def registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """What /metrics serves: this process's metrics (every producer process's, merged, in multiprocess
    mode), and `extra` collectors read at the scrape."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory and not extra:
        return REGISTRY
    merged = CollectorRegistry()
    if directory:
        MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
    else:
        merged.register(_Everything())
    for collector in extra:
        merged.register(collector)
    return merged


class _Everything(Collector):
    """The default registry's metrics, inside another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The body and Content-Type of a /metrics answer."""
    return generate_latest(registry(extra)), CONTENT_TYPE_LATEST


def authorized(authorization: str | None, token: str) -> bool:
    """May this request read /metrics? Always when no token is set; else only with `Bearer <token>`."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
