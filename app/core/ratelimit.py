"""Token buckets per API key and per tenant: requests/s and events/s, refused with the limit and the wait named."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Rate:
    """A sustained rate and the burst a bucket holds; 0 per second means no limit."""

    per_s: float
    burst_s: float = 1.0

    @property
    def limited(self) -> bool:
        return self.per_s > 0

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_s * self.burst_s)


class Bucket:
    """Tokens refilled at `rate.per_s` up to the capacity; a take is all or nothing."""

    __slots__ = ("_level", "_rate", "_stamp")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate
        self._level = rate.capacity
        self._stamp = now

    def take(self, amount: float, now: float) -> float:
        """0.0 if `amount` tokens were taken, else the seconds until they could be (nothing taken)."""
        rate = self._rate
        self._level = min(rate.capacity, self._level + (now - self._stamp) * rate.per_s)
        self._stamp = now
        # More than the bucket ever holds (a batch bigger than the burst) goes once the bucket is
        # full, and leaves it in debt: what follows waits until the average rate is kept again.
        if amount <= self._level or self._level >= rate.capacity:
            self._level -= amount
            return 0.0
        return (min(amount, rate.capacity) - self._level) / rate.per_s


@dataclass(frozen=True, slots=True)
class Limits:
    """What one key and one tenant may send; this process's share of the deployment's budget."""

    requests: Rate = Rate(0)
    events: Rate = Rate(0)

    def share(self, processes: int, burst_s: float) -> Limits:
        """The part one of `processes` producer processes enforces (connections spread over them),
        holding `burst_s` seconds of it."""
        return Limits(Rate(self.requests.per_s / processes, burst_s), Rate(self.events.per_s / processes, burst_s))


class Limiter:
    """The buckets of every key and tenant seen; each is checked, the key's before its tenant's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str, str], Bucket] = {}

    def request(self, key_id: str, key: Limits, tenant: str, of_tenant: Limits) -> None:
        """Count one request against the key's and the tenant's requests/s; RateLimited past either."""
        self._take("key", key_id, "requests_per_s", key.requests, 1)
        self._take("tenant", tenant, "requests_per_s", of_tenant.requests, 1)

    def events(self, key_id: str, key: Limits, tenant: str, of_tenant: Limits, count: int) -> None:
        """Count `count` events against the key's and the tenant's events/s; RateLimited past either."""
        if count:
            self._take("key", key_id, "events_per_s", key.events, count)
            self._take("tenant", tenant, "events_per_s", of_tenant.events, count)

    def _take(self, scope: str, name: str, limit: str, rate: Rate, amount: float) -> None:
        if not rate.limited:
            return
        now = self._clock()
        bucket = self._buckets.get((scope, name, limit))
        if bucket is None:
            bucket = self._buckets[(scope, name, limit)] = Bucket(rate, now)
        wait = bucket.take(amount, now)
        if wait:
            raise RateLimited(
                f"the {scope}'s limit of {rate.per_s:g} {limit.removesuffix('_per_s')}/s is reached; "
                f"retry in {wait:.2f} s",
                field=limit,
                retry_after_s=max(1, math.ceil(wait)),
            )


class Quotas:
    """The deployment's limits as one producer process applies them: declared per key and per tenant
    (in the keys file), else the settings' defaults, each divided among the producer processes."""

    def __init__(
        self,
        key: Limits = Limits(),
        tenant: Limits = Limits(),
        tenants: Mapping[str, Limits] | None = None,
        processes: int = 1,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processes = processes
        self._burst_s = burst_s
        self._key = key.share(processes, burst_s)
        self._tenant = tenant.share(processes, burst_s)
        self._tenants = {name: limits.share(processes, burst_s) for name, limits in (tenants or {}).items()}
        self._declared: dict[Limits, Limits] = {}  # a key's declared limits -> this process's share, made once
        self._limiter = Limiter(clock)

    def request(self, key_id: str, key_limits: Limits | None, tenant: str) -> None:
        """Count one request of this key; RateLimited past the key's or the tenant's requests/s."""
        self._limiter.request(key_id, self._of_key(key_limits), tenant, self._tenants.get(tenant, self._tenant))

    def events(self, key_id: str, key_limits: Limits | None, tenant: str, count: int) -> None:
        """Count `count` events of this key; RateLimited past the key's or the tenant's events/s."""
        of_tenant = self._tenants.get(tenant, self._tenant)
        self._limiter.events(key_id, self._of_key(key_limits), tenant, of_tenant, count)

    def _of_key(self, declared: Limits | None) -> Limits:
        if declared is None:
            return self._key
        shared = self._declared.get(declared)
        if shared is None:
            shared = self._declared[declared] = declared.share(self._processes, self._burst_s)
        return shared
