"""Where webhooks may go: public addresses, and only the private networks the operator lists."""

from __future__ import annotations

import re

import pytest

from app.delivery.destination import Destinations, literal
from app.settings import parse_networks


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # this machine
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",  # the cloud's metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused_by_default(address: str) -> None:
    assert not Destinations().permits(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert Destinations().permits(address)


def test_listed_networks_are_permitted_and_nothing_else() -> None:
    allowed = Destinations(parse_networks("127.0.0.0/8, 10.1.0.0/16"))
    assert allowed.permits("127.0.0.1") and allowed.permits("10.1.200.3")
    assert not allowed.permits("10.2.0.1") and not allowed.permits("169.254.169.254")


def test_a_bad_network_is_named() -> None:
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks("127.0.0.0/8,10.0.0.0/33")


def test_a_refusal_says_what_the_host_is() -> None:
    destinations = Destinations()
    assert destinations.refusal("hooks.example.com", ["93.184.216.34", "10.0.0.1"]) is None  # one is reachable
    refusal = destinations.refusal("localhost", ["127.0.0.1", "::1"])
    assert refusal is not None and "localhost is 127.0.0.1, ::1" in refusal
    assert "SLUICE_WEBHOOK_PRIVATE_NETWORKS" in refusal
    assert destinations.refusal("nowhere.invalid", []) == "nowhere.invalid does not resolve to any address"
    assert literal("10.0.0.1") and literal("::1") and not literal("localhost")
