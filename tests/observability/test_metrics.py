"""The metric definitions without a broker: the tenant cap, the token, the dispatcher's helpers, the worker's tally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
from prometheus_client import REGISTRY

from app.observability import metrics
from app.observability.metrics import (
    OTHER,
    Backlogs,
    BatchHistogram,
    TenantLabels,
    authorized,
    status_class,
    tenant_totals,
)
from app.observability.serving import serve_metrics
from app.settings import Settings
from app.worker.observed import Tally
from tests.support.stack import free_port, unique


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_tenants_past_the_cap_are_other() -> None:
    label = TenantLabels(2)
    assert [label(t) for t in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_the_cap_is_a_setting() -> None:
    assert Settings.from_env({}).observability.metrics_max_tenants == 100
    assert Settings.from_env({"SLUICE_METRICS_MAX_TENANTS": "3"}).observability.metrics_max_tenants == 3


def test_metrics_can_be_switched_off_and_the_collector_named_the_open_telemetry_way() -> None:
    assert Settings.from_env({}).observability.metrics is True
    assert Settings.from_env({"SLUICE_METRICS": "off"}).observability.metrics is False
    given = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert Settings.from_env(given).observability.otlp_endpoint == "http://collector:4318"
    both = {**given, "SLUICE_OTLP_ENDPOINT": "http://mine:4318"}
    assert Settings.from_env(both).observability.otlp_endpoint == "http://mine:4318"


def test_tenant_totals_sum_what_the_producer_counted() -> None:
    tenant = unique("tenant")
    metrics.EVENTS_ACCEPTED.labels("usage", tenant).inc(5)
    metrics.EVENTS_ACCEPTED.labels("pubsub", tenant).inc(2)
    metrics.EVENTS_REFUSED.labels("usage", tenant, "validation.required").inc(1)
    metrics.EVENTS_REFUSED.labels("usage", tenant, "rate_limited").inc(2)
    assert tenant_totals(tenant) == {"events_accepted": 7.0, "events_refused": 3.0}
    assert tenant_totals(unique("nobody")) == {"events_accepted": 0.0, "events_refused": 0.0}


def test_a_token_guards_metrics_only_when_set() -> None:
    assert authorized(None, "")
    assert not authorized(None, "s3cret")
    assert not authorized("Bearer wrong", "s3cret")
    assert not authorized("Basic s3cret", "s3cret")
    assert authorized("Bearer s3cret", "s3cret")
    assert authorized("bearer s3cret", "s3cret")


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 204, 410, 503, None)] == ["2xx", "2xx", "4xx", "5xx", "error"]


def test_backlogs_of_tenants_past_the_cap_add_up_under_other() -> None:
    first, second, third = unique("t"), unique("t"), unique("t")
    backlogs = Backlogs(TenantLabels(1))
    backlogs.set(first, "hooks", 4)
    backlogs.set(second, "a", 3)
    backlogs.set(third, "b", 5)
    backlogs.set(second, "a", 1)
    assert value("sluice_subscription_backlog_records", tenant=first, subscription="hooks") == 4
    assert value("sluice_subscription_backlog_records", tenant=OTHER, subscription=OTHER) == 6


async def test_the_dispatchers_metrics_server_asks_for_its_token() -> None:
    port = free_port()
    runner = await serve_metrics("127.0.0.1", port, "s3cret")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as refused:
                assert refused.status == 401
                assert (await refused.json())["error"]["field"] == "Authorization"
            headers = {"Authorization": "Bearer s3cret"}
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as answered:
                assert answered.status == 200
                assert answered.content_type == "text/plain"
                assert "# TYPE sluice_deliveries_total counter" in await answered.text()
    finally:
        await runner.cleanup()


def test_a_batch_is_counted_once_its_writes_are_in() -> None:
    before = {
        name: value(name)
        for name in (
            "sluice_worker_events_applied_total",
            "sluice_worker_duplicates_dropped_total",
            "sluice_worker_effects_written_total",
            "sluice_worker_event_to_effect_seconds_count",
            "sluice_worker_event_to_effect_seconds_sum",
        )
    }
    fired = value("sluice_worker_rules_fired_total", topic="orders", rule="coins")
    received = datetime(2026, 1, 1, tzinfo=UTC)
    tally = Tally()
    tally.applied_one("orders", ["coins"], received.timestamp())
    tally.applied_one("orders", ("coins",), received.timestamp())
    tally.redelivered_one(received.timestamp())
    tally.duplicates += 1
    written = (received + timedelta(seconds=0.5)).timestamp()
    assert value("sluice_worker_events_applied_total") == before["sluice_worker_events_applied_total"]  # not yet
    tally.export(4, 0.01, written)
    after = {name: value(name) - was for name, was in before.items()}
    assert after == {
        "sluice_worker_events_applied_total": 2,
        "sluice_worker_duplicates_dropped_total": 1,
        "sluice_worker_effects_written_total": 3,
        "sluice_worker_event_to_effect_seconds_count": 3,
        "sluice_worker_event_to_effect_seconds_sum": 1.5,
    }
    assert value("sluice_worker_rules_fired_total", topic="orders", rule="coins") - fired == 2


def test_a_compiled_batch_adds_its_counts_in_one_call() -> None:
    names = (
        "sluice_worker_events_applied_total",
        "sluice_worker_duplicates_dropped_total",
        "sluice_worker_effects_written_total",
        "sluice_worker_event_to_effect_seconds_count",
        "sluice_worker_event_to_effect_seconds_sum",
    )
    before = {name: value(name) for name in names}
    topic = unique("topic")
    received = datetime(2026, 1, 1, tzinfo=UTC)
    received_ms = int(received.timestamp() * 1000)
    tally = Tally()
    tally.applied_one(topic, ["coins"], received.timestamp())  # the Python engine's partition
    tally.add(2, 1, {(topic, "coins"): 2, (topic, "badge"): 1}, [received_ms, received_ms + 250, received_ms + 500])
    tally.add(0, 2, {}, [received_ms + 2000])  # a redelivery received by a clock ahead of ours: 0 s, not -1
    tally.export(7, 0.01, (received + timedelta(seconds=1)).timestamp())
    assert {name: value(name) - was for name, was in before.items()} == {
        "sluice_worker_events_applied_total": 3,
        "sluice_worker_duplicates_dropped_total": 3,
        "sluice_worker_effects_written_total": 5,
        "sluice_worker_event_to_effect_seconds_count": 5,
        "sluice_worker_event_to_effect_seconds_sum": 1 + 1 + 0.75 + 0.5 + 0,
    }
    assert value("sluice_worker_rules_fired_total", topic=topic, rule="coins") == 3
    assert value("sluice_worker_rules_fired_total", topic=topic, rule="badge") == 1


def test_a_batch_histogram_counts_each_value_in_the_first_bucket_that_holds_it() -> None:
    name = f"sluice_test_{unique('h').replace('-', '_')}_seconds"
    histogram = BatchHistogram(name, "a test", (0.1, 1.0))
    try:
        histogram.observe_many([0.05, 0.1, 0.5, 1.0, 3.0])
        histogram.observe_many([])
        assert [value(f"{name}_bucket", le=le) for le in ("0.1", "1.0", "+Inf")] == [2, 4, 5]
        assert (value(f"{name}_count"), value(f"{name}_sum")) == (5, 4.65)
    finally:
        REGISTRY.unregister(histogram)
