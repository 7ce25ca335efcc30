from pathlib import Path

import pytest

from app.core.ratelimit import Limits, Rate
from app.core.tenants import KeyRing, hash_key
from app.errors import ConfigError, Forbidden, Unauthorized


def test_plain_keys_map_to_tenants() -> None:
    ring = KeyRing.from_sources("dev_key_123:dev, other:acme", None)
    assert ring.tenant_for("dev_key_123") == "dev"
    assert ring.tenant_for("other") == "acme"


def test_keys_file_holds_hashes_only(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - sha256: {hash_key('prod-secret')}\n    tenant: acme\n")
    ring = KeyRing.from_sources("", keys)
    assert ring.tenant_for("prod-secret") == "acme"
    assert "prod-secret" not in keys.read_text()


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_api_key"), ("", "missing_api_key"), ("nope", "invalid_api_key")]
)
def test_missing_or_unknown_key_is_unauthorized(key: str | None, code: str) -> None:
    ring = KeyRing.from_sources("dev_key_123:dev", None)
    with pytest.raises(Unauthorized) as caught:
        ring.tenant_for(key)
    assert caught.value.code == code
    assert caught.value.status == 401


@pytest.mark.parametrize("text", ["no-tenant", "key:Bad Tenant", ":dev"])
def test_malformed_plain_keys_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="SLUICE_API_KEYS"):
        KeyRing.from_sources(text, None)


def test_malformed_keys_file_names_the_entry(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - sha256: not-hex\n    tenant: acme\n")
    with pytest.raises(ConfigError, match=r"keys\[0\]\.sha256"):
        KeyRing.from_sources("", keys)


def test_keys_file_may_limit_a_key_to_topics(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - sha256: {hash_key('narrow')}\n    tenant: acme\n    topics: [orders]\n")
    principal = KeyRing.from_sources("", keys).principal_for("narrow")
    principal.check_topic("orders")
    with pytest.raises(Forbidden) as caught:
        principal.check_topic("usage")
    assert caught.value.status == 403
    assert caught.value.field == "topic_slug"


def test_development_keys_may_write_every_topic() -> None:
    KeyRing.from_sources("k:dev", None).principal_for("k").check_topic("anything")


def test_keys_file_declares_rate_limits_per_key_and_per_tenant(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - {{sha256: {hash_key('k1')}, tenant: acme, limits: {{requests_per_s: 5, events_per_s: 100}}}}\n"
        f"  - {{sha256: {hash_key('k2')}, tenant: acme}}\n"
        "tenants:\n  acme: {events_per_s: 250}\n"
    )
    ring = KeyRing.from_sources("", keys)
    first, second = ring.principal_for("k1"), ring.principal_for("k2")
    assert first.limits == Limits(Rate(5), Rate(100))
    assert second.limits is None  # the settings' defaults apply
    assert ring.tenant_limits == {"acme": Limits(Rate(0), Rate(250))}
    assert first.key_id == hash_key("k1")[:16] != second.key_id


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("limits: {requests_per_s: -1}", "keys[0].limits.requests_per_s"),
        ("limits: {requests_per_s: fast}", "keys[0].limits.requests_per_s"),
        ("limits: {per_minute: 5}", "keys[0].limits"),
    ],
)
def test_a_bad_limit_names_its_field(tmp_path: Path, text: str, field: str) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{sha256: {hash_key('k1')}, tenant: acme, {text}}}\n")
    with pytest.raises(ConfigError) as caught:
        KeyRing.from_sources("", keys)
    assert caught.value.field == field
