"""The webhook retry schedule: exponential ceilings, full jitter, a total time."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from app.delivery.backoff import Backoff


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
