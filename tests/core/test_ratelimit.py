"""Token buckets: refill, all-or-nothing takes, the wait named, keys and tenants apart, a process's share."""

import pytest

from app.core.ratelimit import Bucket, Limits, Quotas, Rate
from app.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_holds_its_burst_then_refills_at_its_rate() -> None:
    bucket = Bucket(Rate(10, burst_s=1), now=0)
    assert [bucket.take(1, 0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(1, 0) == pytest.approx(0.1)
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(5, 10) == 0.0  # a long quiet spell refills to the burst, not beyond
    assert bucket.take(6, 10) == pytest.approx(0.1)


def test_a_take_is_all_or_nothing() -> None:
    bucket = Bucket(Rate(10), now=0)
    assert bucket.take(8, 0) == 0.0
    assert bucket.take(5, 0) == pytest.approx(0.3)  # refused whole: 2 tokens stay
    assert bucket.take(2, 0) == 0.0


def test_a_batch_larger_than_the_burst_goes_on_a_full_bucket_and_leaves_it_in_debt() -> None:
    bucket = Bucket(Rate(10), now=0)
    bucket.take(10, 0)
    assert bucket.take(50, 0) == pytest.approx(1.0)  # waits for a full bucket, not for 50 tokens
    assert bucket.take(50, 1.0) == 0.0
    assert bucket.take(1, 1.0) == pytest.approx(4.1)  # the debt is paid back at the rate


def test_past_a_keys_limit_the_refusal_names_the_limit_and_the_wait() -> None:
    clock = Clock()
    quotas = Quotas(key=Limits(requests=Rate(2)), clock=clock)
    quotas.request("k1", None, "acme")
    quotas.request("k1", None, "acme")
    with pytest.raises(RateLimited) as caught:
        quotas.request("k1", None, "acme")
    assert (caught.value.status, caught.value.field, caught.value.retry_after_s) == (429, "requests_per_s", 1)
    assert "key's limit of 2 requests/s" in caught.value.message
    quotas.request("k2", None, "acme")  # another key of the tenant has its own bucket
    clock.now = 0.5
    quotas.request("k1", None, "acme")


def test_a_tenants_limit_holds_over_all_its_keys_and_no_other_tenant() -> None:
    quotas = Quotas(tenants={"acme": Limits(events=Rate(100))}, clock=Clock())
    quotas.events("k1", None, "acme", 60)
    with pytest.raises(RateLimited) as caught:
        quotas.events("k2", None, "acme", 60)
    assert caught.value.field == "events_per_s"
    assert "tenant's limit" in caught.value.message
    quotas.events("k3", None, "globex", 10_000)


def test_a_keys_declared_limits_win_over_the_default() -> None:
    quotas = Quotas(key=Limits(events=Rate(1000)), clock=Clock())
    quotas.events("k1", Limits(events=Rate(10)), "acme", 10)
    with pytest.raises(RateLimited):
        quotas.events("k1", Limits(events=Rate(10)), "acme", 1)
    quotas.events("k2", None, "acme", 1000)


def test_each_of_n_processes_enforces_its_share() -> None:
    quotas = Quotas(key=Limits(requests=Rate(10)), processes=2, clock=Clock())
    for _ in range(5):
        quotas.request("k1", None, "acme")
    with pytest.raises(RateLimited):
        quotas.request("k1", None, "acme")


def test_no_limit_is_the_default() -> None:
    quotas = Quotas(clock=Clock())
    for _ in range(10_000):
        quotas.request("k1", None, "acme")
    quotas.events("k1", None, "acme", 10**9)
