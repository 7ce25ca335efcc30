"""Retry schedule of a webhook delivery: exponential backoff with full jitter, capped in total time."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float  # ceiling of the first wait
    max_s: float  # no single wait is longer
    total_s: float  # once this long has passed since the first attempt, give up

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1-based)."""
        return min(self.max_s, self.base_s * 2.0 ** min(attempt - 1, 62))

    def next_delay(self, attempt: int, elapsed_s: float, rng: random.Random) -> float | None:
        """The wait before retrying after failed attempt `attempt`, `elapsed_s` after the first; None: give up.

        The wait is drawn uniformly in [0, ceiling] ("full jitter") so that many failing
        deliveries spread apart, and a receiver that comes back is not hit by all at once.
        Measured on the clock (attempts that time out count), the last wait ends at `total_s`.
        """
        left = self.total_s - elapsed_s
        if left <= 0:
            return None
        return min(rng.uniform(0.0, self.ceiling(attempt)), left)
