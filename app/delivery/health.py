"""Whether a webhook endpoint is failing: since when it has answered no 2xx, and when that means disabling it."""

from __future__ import annotations


class Streaks:
    """Each subscription's current streak of failures, from its first failed attempt to its next 2xx.

    Keyed by the subscription and its creation time, so that one deleted and made again under
    the same name starts afresh. Kept in memory: a restarted dispatcher starts every streak anew.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[str, int], float] = {}

    def succeeded(self, key: str, generation: int) -> None:
        self._since.pop((key, generation), None)

    def failed(self, key: str, generation: int, now: float) -> float:
        """Record a failed attempt at Unix time `now`; the time the streak began."""
        return self._since.setdefault((key, generation), now)

    def failing_since(self, key: str, generation: int) -> float | None:
        return self._since.get((key, generation))

    def due(self, key: str, generation: int, now: float, disable_after_s: float) -> bool:
        """Has the endpoint failed for `disable_after_s` (0: never disable) without a 2xx?"""
        since = self._since.get((key, generation))
        return disable_after_s > 0 and since is not None and now - since >= disable_after_s

    def forget(self, key: str, generation: int) -> None:
        """The subscription is gone, or was disabled: its next streak starts from nothing."""
        self._since.pop((key, generation), None)
