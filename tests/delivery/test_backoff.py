"""The webhook retry schedule: exponential ceilings, full jitter, attempts and total time, Retry-After, overrides."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.subscription import Retry, Subscription, parse_subscription
from app.delivery.backoff import Backoff, retry_after
from app.delivery.health import Streaks
from app.errors import ValidationError
from app.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@given(st.integers(1, 200), st.floats(0, 100), st.integers(0, 2**32))
def test_every_wait_is_within_its_ceiling_and_the_total(attempt: int, elapsed: float, seed: int) -> None:
    backoff = Backoff(base_s=0.5, max_s=30, total_s=60)
    wait = backoff.next_delay(attempt, elapsed, random.Random(seed))
    if elapsed >= 60:
        assert wait is None
    else:
        assert wait is not None
        assert 0 <= wait <= min(backoff.ceiling(attempt), 60 - elapsed)


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=4, total_s=60)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]


def test_waits_are_jittered() -> None:
    backoff = Backoff(base_s=1, max_s=8, total_s=60)
    rng = random.Random(7)
    assert len({backoff.next_delay(4, 0, rng) for _ in range(20)}) == 20


def test_max_attempts_gives_up_after_that_many_however_much_time_is_left() -> None:
    backoff = Backoff(base_s=0.1, max_s=1, total_s=3600, max_attempts=3)
    rng = random.Random(1)
    assert backoff.next_delay(1, 0, rng) is not None
    assert backoff.next_delay(2, 0, rng) is not None
    assert backoff.next_delay(3, 0, rng) is None  # the third attempt was the last
    assert Backoff(0.1, 1, 3600, max_attempts=0).next_delay(500, 0, rng) is not None  # 0: no limit but time


def test_a_retry_after_is_the_wait_even_past_the_ceiling_but_not_past_the_total() -> None:
    backoff = Backoff(base_s=0.1, max_s=1, total_s=60)
    rng = random.Random(3)
    assert backoff.next_delay(1, 0, rng, retry_after_s=30) == 30
    assert backoff.next_delay(1, 50, rng, retry_after_s=30) == 10  # capped by the time left
    assert backoff.next_delay(1, 60, rng, retry_after_s=1) is None
    assert backoff.next_delay(1, 0, rng, retry_after_s=0) == 0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
        ("Sunday, 01-Mar-26 12:00:30 GMT", 30.0),  # RFC 850, obsolete but to be accepted
        ("Sun Mar  1 12:00:30 2026", 30.0),  # asctime, no zone: GMT
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),
    ],
)
def test_retry_after_reads_delta_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, NOW) == seconds


def webhook(**body: Any) -> Subscription:
    return parse_subscription(
        {"name": "hook", "url": "https://example.com/hook", **body}, tenant="acme", topics=frozenset({"orders"})
    )


def test_a_subscription_s_own_schedule_overrides_the_deployment_s_field_by_field() -> None:
    settings = Settings.from_env(
        {
            "SLUICE_WEBHOOK_BACKOFF_BASE_S": "0.5",
            "SLUICE_WEBHOOK_BACKOFF_MAX_S": "60",
            "SLUICE_WEBHOOK_RETRY_S": "3600",
            "SLUICE_WEBHOOK_MAX_ATTEMPTS": "10",
        }
    ).delivery
    assert Backoff.of(settings, webhook()) == Backoff(0.5, 60, 3600, 10)
    sub = webhook(retry={"base_s": 2, "total_s": 30, "max_attempts": 0}, disable_after_s=600)
    assert sub.retry == Retry(base_s=2.0, total_s=30.0, max_attempts=0)
    assert sub.disable_after_s == 600
    assert Backoff.of(settings, sub) == Backoff(2, 60, 30, 0)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"retry": {"base_s": 0}}, "retry.base_s", "validation.range"),
        ({"retry": {"base_s": "1"}}, "retry.base_s", "validation.type"),
        ({"retry": {"max_s": True}}, "retry.max_s", "validation.type"),
        ({"retry": {"base_s": 10, "max_s": 5}}, "retry.max_s", "validation.range"),
        ({"retry": {"total_s": -1}}, "retry.total_s", "validation.range"),
        ({"retry": {"total_s": 8 * 86400}}, "retry.total_s", "validation.range"),
        ({"retry": {"max_attempts": 2.5}}, "retry.max_attempts", "validation.type"),
        ({"retry": {"max_attempts": 1001}}, "retry.max_attempts", "validation.range"),
        ({"retry": {"tries": 3}}, "retry.tries", "validation.unknown"),
        ({"retry": [1]}, "retry", "validation.type"),
        ({"disable_after_s": -1}, "disable_after_s", "validation.range"),
        ({"disable_after_s": float("nan")}, "disable_after_s", "validation.range"),
    ],
)
def test_a_bad_retry_setting_is_refused_naming_the_field(body: dict[str, Any], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        webhook(**body)
    assert (refused.value.field, refused.value.code) == (field, code)


def test_only_a_webhook_retries() -> None:
    for body, field in [({"retry": {"base_s": 1}}, "retry"), ({"disable_after_s": 60}, "disable_after_s")]:
        with pytest.raises(ValidationError) as refused:
            parse_subscription({"name": "sse", **body}, tenant="acme", topics=frozenset({"orders"}))
        assert refused.value.field == field


def test_a_topic_file_entry_names_its_path() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_subscription(
            {"name": "hook", "url": "https://example.com/h", "retry": {"max_s": 0}},
            tenant="acme",
            topics=frozenset({"orders"}),
            path="subscriptions[2].",
        )
    assert refused.value.field == "subscriptions[2].retry.max_s"


def test_a_streak_lasts_from_the_first_failure_to_the_next_success() -> None:
    streaks = Streaks()
    assert streaks.failed("acme:hook", 1, 100.0) == 100.0
    assert streaks.failed("acme:hook", 1, 150.0) == 100.0  # still failing since the first
    assert not streaks.due("acme:hook", 1, 150.0, 60)
    assert streaks.due("acme:hook", 1, 160.0, 60)
    assert not streaks.due("acme:hook", 1, 10_000.0, 0)  # 0: never disabled
    assert not streaks.due("acme:hook", 2, 160.0, 60)  # made again: another subscription
    streaks.succeeded("acme:hook", 1)
    assert not streaks.due("acme:hook", 1, 10_000.0, 60)
    assert streaks.failed("acme:hook", 1, 200.0) == 200.0  # a new streak
