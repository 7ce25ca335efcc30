"""API keys map to tenants: plain keys from SLUICE_API_KEYS, SHA-256 hashed keys from a YAML file."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from app.core.ratelimit import Limits, Rate
from app.errors import ConfigError, Forbidden, Unauthorized

TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(digest: str) -> str:
    """A key's public id: the start of its SHA-256 hex digest, enough to tell keys apart, useless to guess one."""
    return digest[:16]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a key speaks for, which topics it may use (None: all of its tenant's), and its own rate limits."""

    tenant: str
    topics: frozenset[str] | None = None
    key_id: str = ""  # set by the KeyRing from the key's hash
    limits: Limits | None = None  # None: the settings' defaults for a key

    def may_use(self, slug: str) -> bool:
        return self.topics is None or slug in self.topics

    def check_topic(self, slug: str, field: str = "topic_slug") -> None:
        """Forbidden unless this key may use the topic; every route that resolves a topic asks."""
        if not self.may_use(slug):
            raise Forbidden(f"this API key may not use topic {slug!r}", field=field, code="topic_forbidden")


class KeyRing:
    """Resolves a presented API key to its principal. Only hashes are held in memory."""

    def __init__(
        self, principals_by_hash: Mapping[str, Principal], tenant_limits: Mapping[str, Limits] | None = None
    ) -> None:
        self._principals = {digest: replace(p, key_id=key_id(digest)) for digest, p in principals_by_hash.items()}
        self.tenant_limits: Mapping[str, Limits] = dict(tenant_limits or {})
        self._by_id = {key_id(digest): principal for digest, principal in self._principals.items()}

    def __len__(self) -> int:
        return len(self._principals)

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(principal.tenant for principal in self._principals.values())

    @classmethod
    def from_sources(cls, api_keys: str, keys_file: Path | None) -> KeyRing:
        principals = {digest: Principal(tenant) for digest, tenant in parse_plain_keys(api_keys).items()}
        tenant_limits: dict[str, Limits] = {}
        if keys_file is not None:
            declared, tenant_limits = load_keys_file(keys_file)
            for digest, principal in declared.items():
                principals.setdefault(digest, principal)
        return cls(principals, tenant_limits)

    def tenant_for(self, key: str | None) -> str:
        return self.principal_for(key).tenant

    def principal_for(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized(
                "missing API key: send 'X-API-Key: <key>', 'Authorization: Bearer <key>' or Basic with the key as user",
                field="X-API-Key",
                code="missing_api_key",
            )
        # A dict lookup on the digest does not leak how much of a key matched.
        principal = self._principals.get(hash_key(key))
        if principal is None:
            raise Unauthorized("unknown API key", field="X-API-Key", code="invalid_api_key")
        return principal

    def principal_by_id(self, identifier: str) -> Principal | None:
        """The principal of the key whose `key_id` this is, or None once that key is gone from the ring."""
        return self._by_id.get(identifier)


def dev_keys(text: str) -> list[tuple[str, str]]:
    """The (key, tenant) pairs of SLUICE_API_KEYS, checked."""
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, tenant = item.rpartition(":")
        if not sep or not key or not TENANT.fullmatch(tenant):
            raise ConfigError(
                f"SLUICE_API_KEYS entry {index + 1}: expected key:tenant with a lower-case tenant name",
                field="SLUICE_API_KEYS",
            )
        pairs.append((key, tenant))
    return pairs


def parse_plain_keys(text: str) -> dict[str, str]:
    return {hash_key(key): tenant for key, tenant in dev_keys(text)}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read keys file: {exc}", field="SLUICE_KEYS_FILE") from exc


def load_keys_file(path: Path) -> tuple[dict[str, Principal], dict[str, Limits]]:
    """Read `keys: [{sha256: <hex>, tenant: <name>, topics: [<slug>, ...], limits: {...}}, ...]` and the
    optional `tenants: {<name>: {requests_per_s, events_per_s}}`: the principals by hash, the tenants' limits.

    A key's `topics` and `limits` (`requests_per_s`, `events_per_s`) are optional.
    """
    raw = _read_yaml(path)
    return _principals(raw, path), _tenant_limits(raw, path)


def _principals(raw: Any, path: Path) -> dict[str, Principal]:
    entries = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a mapping with a 'keys' list", field="keys")
    principals: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping", field=f"keys[{index}]")
        digest, tenant = entry.get("sha256"), entry.get("tenant")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest.lower()):
            raise ConfigError(f"{where}.sha256: must be 64 hex digits", field=f"keys[{index}].sha256")
        if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
            raise ConfigError(f"{where}.tenant: must be a lower-case tenant name", field=f"keys[{index}].tenant")
        topics = entry.get("topics")
        if topics is not None and not (isinstance(topics, list) and all(isinstance(t, str) for t in topics)):
            raise ConfigError(f"{where}.topics: must be a list of topic slugs", field=f"keys[{index}].topics")
        limits = None if entry.get("limits") is None else parse_limits(entry["limits"], f"{where}.limits")
        principals[digest.lower()] = Principal(tenant, None if topics is None else frozenset(topics), limits=limits)
    return principals


def _tenant_limits(raw: Any, path: Path) -> dict[str, Limits]:
    tenants = raw.get("tenants") if isinstance(raw, dict) else None
    if tenants is None:
        return {}
    if not isinstance(tenants, dict):
        raise ConfigError(f"{path}: tenants: must map tenant names to limits", field="tenants")
    found = {}
    for name, limits in tenants.items():
        if not isinstance(name, str) or not TENANT.fullmatch(name):
            raise ConfigError(f"{path}: tenants.{name}: not a tenant name", field=f"tenants.{name}")
        found[name] = parse_limits(limits, f"{path}: tenants.{name}")
    return found


LIMIT_FIELDS = ("requests_per_s", "events_per_s")


def parse_limits(value: Any, where: str) -> Limits:
    """`{requests_per_s, events_per_s}`, each a number of at least 0 (0 or absent: no limit)."""
    field = where.split(": ", 1)[-1]
    if not isinstance(value, dict) or set(value) - set(LIMIT_FIELDS):
        raise ConfigError(f"{where}: must be a mapping of {' and '.join(LIMIT_FIELDS)}", field=field)
    rates = {}
    for name in LIMIT_FIELDS:
        rate = value.get(name, 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0:
            raise ConfigError(f"{where}.{name}: must be a number of at least 0", field=f"{field}.{name}")
        rates[name] = Rate(float(rate))
    return Limits(requests=rates["requests_per_s"], events=rates["events_per_s"])
