"""Retry schedule of a webhook delivery: exponential backoff with full jitter, capped in attempts and total time."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from app.core.subscription import Subscription
from app.settings import DeliverySettings


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float  # ceiling of the first wait
    max_s: float  # no single wait is longer, unless the receiver asks for it (Retry-After)
    total_s: float  # once this long has passed since the first attempt, give up
    max_attempts: int = 0  # give up after this many attempts; 0: no limit but total_s

    @classmethod
    def of(cls, settings: DeliverySettings, sub: Subscription) -> Backoff:
        """The subscription's own schedule, its unset parts the deployment's."""
        own = sub.retry
        return cls(
            settings.backoff_base_s if own.base_s is None else own.base_s,
            settings.backoff_max_s if own.max_s is None else own.max_s,
            settings.retry_s if own.total_s is None else own.total_s,
            settings.max_attempts if own.max_attempts is None else own.max_attempts,
        )

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1-based)."""
        return min(self.max_s, self.base_s * 2.0 ** min(attempt - 1, 62))

    def next_delay(
        self, attempt: int, elapsed_s: float, rng: random.Random, retry_after_s: float | None = None
    ) -> float | None:
        """The wait before retrying after failed attempt `attempt`, `elapsed_s` after the first; None: give up.

        The wait is drawn uniformly in [0, ceiling] ("full jitter") so that many failing
        deliveries spread apart, and a receiver that comes back is not hit by all at once.
        A receiver's Retry-After (`retry_after_s`) is the wait instead. Measured on the clock
        (attempts that time out count), the last wait ends at `total_s`.
        """
        if self.max_attempts and attempt >= self.max_attempts:
            return None
        left = self.total_s - elapsed_s
        if left <= 0:
            return None
        wait = rng.uniform(0.0, self.ceiling(attempt)) if retry_after_s is None else retry_after_s
        return min(wait, left)


def retry_after(value: str | None, now: float) -> float | None:
    """The seconds a Retry-After header asks to wait (RFC 9110 section 10.2.3), from Unix time `now`.

    Delta-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`); a date in the past
    is 0. None when the header is absent or unreadable: the schedule's own wait applies then.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the asctime form carries no zone; every HTTP-date is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
