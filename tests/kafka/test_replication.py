"""Replication of Sluice's topics: the automatic values, the settings that override them, the local cluster's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import Catalog
from app.cli.main import main
from app.errors import ConfigError, SettingsError
from app.kafka import launcher
from app.kafka.launcher import LocalBroker, LocalCluster, local_kafka
from app.kafka.topology import Replication, Topology
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("factor", "min_insync", "brokers", "expected"),
    [
        (0, 0, 1, Replication(1, 1)),
        (0, 0, 2, Replication(2, 1)),
        (0, 0, 3, Replication(3, 2)),
        (0, 0, 7, Replication(3, 2)),
        (0, 1, 5, Replication(3, 1)),
        (5, 0, 7, Replication(5, 4)),
        (2, 2, 3, Replication(2, 2)),
        (1, 0, 3, Replication(1, 1)),
    ],
)
def test_automatic_replication_is_three_copies_two_in_sync_or_what_the_cluster_holds(
    factor: int, min_insync: int, brokers: int, expected: Replication
) -> None:
    assert Replication.resolve(factor, min_insync, brokers) == expected


def test_more_in_sync_copies_than_replicas_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        Replication.resolve(0, 2, 1)
    assert caught.value.field == "SLUICE_MIN_INSYNC_REPLICAS"
    with pytest.raises(SettingsError, match="must not exceed SLUICE_REPLICATION_FACTOR"):
        Settings.from_env({"SLUICE_REPLICATION_FACTOR": "2", "SLUICE_MIN_INSYNC_REPLICAS": "3"})
    with pytest.raises(SettingsError, match="SLUICE_REPLICATION_FACTOR: must be 0"):
        Settings.from_env({"SLUICE_REPLICATION_FACTOR": "-1"})


def test_the_settings_default_to_automatic_and_reach_the_topology() -> None:
    catalog = Catalog.load(REPO / "topics")
    automatic = Topology.of(Settings.from_env({}).kafka, catalog)
    assert (automatic.replication_factor, automatic.min_insync_replicas) == (0, 0)
    given = Settings.from_env({"SLUICE_REPLICATION_FACTOR": "3", "SLUICE_MIN_INSYNC_REPLICAS": "1"})
    topology = Topology.of(given.kafka, catalog)
    assert (topology.replication_factor, topology.min_insync_replicas) == (3, 1)
    resolved = automatic.with_replication(Replication(3, 2))
    assert (resolved.replication_factor, resolved.min_insync_replicas) == (3, 2)


def test_topics_made_on_demand_are_known_to_the_start_up_check() -> None:
    kafka = Settings.from_env({"SLUICE_NAMESPACE": "ns"}).kafka
    topology = Topology.of(kafka, Catalog.load(REPO / "topics"))
    assert topology.made_on_demand("ns.subscriptions") and topology.made_on_demand("ns.pulls")
    assert topology.made_on_demand(topology.parked("acme", "hook"))
    assert not topology.made_on_demand("ns.effects") and not topology.made_on_demand("other.parked.acme.hook")


def properties(broker: LocalBroker) -> dict[str, str]:
    lines = broker._properties().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_one_node_is_its_own_quorum_and_keeps_single_copies(tmp_path: Path) -> None:
    broker = local_kafka(Settings.from_env({"SLUICE_KAFKA_DATA_DIR": str(tmp_path), "SLUICE_KAFKA_PORT": "9192"}))
    assert isinstance(broker, LocalBroker)
    config = properties(broker)
    assert config["node.id"] == "1"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9193"
    assert config["offsets.topic.replication.factor"] == "1" and config["transaction.state.log.min.isr"] == "1"
    assert broker.data_dir == tmp_path.resolve()


def test_three_nodes_take_consecutive_ports_one_quorum_and_replicated_internal_topics(tmp_path: Path) -> None:
    env = {"SLUICE_KAFKA_DATA_DIR": str(tmp_path), "SLUICE_KAFKA_PORT": "9192"}
    cluster = local_kafka(Settings.from_env(env), nodes=3)
    assert isinstance(cluster, LocalCluster)
    assert cluster.bootstrap == "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194"
    voters = "1@127.0.0.1:9195,2@127.0.0.1:9196,3@127.0.0.1:9197"
    for n, node in enumerate(cluster.nodes, 1):
        config = properties(node)
        assert config["node.id"] == str(n) and config["controller.quorum.voters"] == voters
        assert config["listeners"] == f"PLAINTEXT://127.0.0.1:{9191 + n},CONTROLLER://127.0.0.1:{9194 + n}"
        assert config["offsets.topic.replication.factor"] == "3" and config["transaction.state.log.min.isr"] == "2"
        assert node.data_dir == (tmp_path / f"node-{n}").resolve()
    assert len({node.cluster_id for node in cluster.nodes}) == 1


def test_a_node_formatted_before_gives_its_cluster_id_to_the_others(tmp_path: Path) -> None:
    (tmp_path / "node-2").mkdir()
    (tmp_path / "node-2" / "meta.properties").write_text("version=1\ncluster.id=kept-id_01\nnode.id=2\n")
    cluster = LocalCluster(home=tmp_path, data_dir=tmp_path, ports=[1, 2, 3], controller_ports=[4, 5, 6])
    assert [node.cluster_id for node in cluster.nodes] == ["kept-id_01"] * 3


def test_sluice_kafka_nodes_runs_that_many_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[int, int, Path]] = []

    def serve(settings: Settings, nodes: int = 1) -> int:
        ran.append((nodes, settings.kafka.port, settings.kafka.data_dir))
        return 0

    monkeypatch.setattr(launcher, "serve", serve)
    assert main(["kafka", "--nodes", "3", "--port", "19192", "--data-dir", str(tmp_path)]) == 0
    assert main(["kafka"]) == 0
    assert ran[0] == (3, 19192, tmp_path) and ran[1][0] == 1
