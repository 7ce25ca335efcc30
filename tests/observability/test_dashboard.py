"""The Grafana dashboard and the Prometheus scrape config name only what Sluice exports, where it serves it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from app.observability import metrics
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "docs" / "observability"
DASHBOARD: dict[str, Any] = json.loads((HERE / "grafana" / "sluice.json").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name Sluice's metrics module defines, as a query names it."""
    names = {metrics.GROUP_LAG_NAME}
    for family in REGISTRY.collect():
        if family.name.startswith("sluice_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in DASHBOARD["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_every_panel_queries_something() -> None:
    panels = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert panels
    assert all(panel["targets"] for panel in panels)


def test_every_query_names_metrics_sluice_exports() -> None:
    known = exported()
    for title, expr in queries():
        named = set(re.findall(r"\bsluice_[a-z_]+", expr))
        assert named, f"{title}: {expr} names no Sluice metric"
        assert named <= known, f"{title}: {sorted(named - known)} are not exported"


def test_the_finder_catches_a_name_that_is_not_exported() -> None:
    assert "sluice_http_requests_total" in exported()
    assert "sluice_http_requests" not in exported()  # a counter is queried with its _total
    assert "sluice_publish_duration_seconds_bucket" in exported()


def test_the_dashboards_data_source_is_the_provisioned_one() -> None:
    sources = yaml.safe_load((HERE / "grafana" / "datasources.yml").read_text())["datasources"]
    uids = {source["uid"] for source in sources}
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids


def test_prometheus_scrapes_each_process_on_its_port() -> None:
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    services = COMPOSE["services"]

    def settings(service: str) -> Settings:
        env = services[service].get("environment") or {}
        return Settings.from_env({k: str(v) for k, v in env.items() if k.startswith("SLUICE_") and "$" not in str(v)})

    assert targets == {
        "sluice-producer": [f"producer:{settings('producer').producer.port}"],
        "sluice-worker": [f"worker:{settings('worker').worker.port}"],
        "sluice-deliver": [f"deliver:{settings('deliver').observability.deliver_metrics_port}"],
    }
    assert settings("deliver").observability.deliver_metrics_host == "0.0.0.0"


def test_compose_mounts_the_config_and_the_dashboard() -> None:
    mounted = [
        volume.split(":")[0]
        for service in ("prometheus", "grafana")
        for volume in COMPOSE["services"][service]["volumes"]
        if volume.startswith("./")
    ]
    assert mounted
    for path in mounted:
        assert (REPO / path).is_file(), path
