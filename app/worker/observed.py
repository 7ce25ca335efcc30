"""The worker's metrics and recovery progress: counted per batch, not per event, where it costs."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from app.observability import metrics

log = logging.getLogger(__name__)


class Tally:
    """What one batch came to, added up as it is applied and exported once its writes are acknowledged.

    Prometheus counters take a lock per increment; a batch of a thousand events is a handful of them here.
    """

    __slots__ = ("applied", "duplicates", "fired", "received_ms")

    def __init__(self) -> None:
        self.applied = 0
        self.duplicates = 0
        self.fired: Counter[tuple[str, str]] = Counter()
        # received_at of each effect written, in epoch ms as the compiled core counts it: its batch's
        # list is added as it is, and the conversion to seconds is paid once, in `export`.
        self.received_ms: list[float] = []

    def applied_one(self, topic: str, fired: Iterable[str], received_at: float) -> None:
        """An event applied: the ids of the rules it fired, when it was received (epoch seconds)."""
        self.applied += 1
        for rule in fired:
            self.fired[topic, rule] += 1
        self.received_ms.append(received_at * 1000)

    def redelivered_one(self, received_at: float) -> None:
        self.received_ms.append(received_at * 1000)  # its effect is written again

    def add(
        self, applied: int, duplicates: int, fired: Mapping[tuple[str, str], int], received_ms: Iterable[float]
    ) -> None:
        """A compiled batch's counts (`app.native.Counts`): applied, duplicates, times each (topic, rule)
        fired, and received_at in epoch ms of each event whose effect it wrote."""
        self.applied += applied
        self.duplicates += duplicates
        self.fired.update(fired)
        self.received_ms.extend(received_ms)

    def export(self, events: int, seconds: float, written_at: float) -> None:
        """Count the batch: `events` read, `seconds` from first read to acks, effects written at `written_at`."""
        metrics.BATCH_EVENTS.observe(events)
        metrics.BATCH_DURATION.observe(seconds)
        if self.applied:
            metrics.EVENTS_APPLIED.inc(self.applied)
        if self.duplicates:
            metrics.DUPLICATES_DROPPED.inc(self.duplicates)
        for (topic, rule), count in self.fired.items():
            metrics.RULES_FIRED.labels(topic, rule).inc(count)
        if self.received_ms:
            metrics.EFFECTS_WRITTEN.inc(len(self.received_ms))
            written_ms = written_at * 1000
            lags = [(written_ms - at) / 1000 for at in self.received_ms]
            # Usually no received_at is ahead of our clock: then nothing to clamp, at a third of the cost.
            if min(lags) < 0:
                lags = [max(0.0, lag) for lag in lags]
            metrics.EVENT_TO_EFFECT.observe_many(lags)


class Lags:
    """The consumer lag gauge of the partitions one Intake owns; a partition given away leaves it."""

    def __init__(self) -> None:
        self._shown: set[tuple[str, int]] = set()

    def show(self, lags: Mapping[tuple[str, int], int]) -> None:
        for topic, partition in self._shown - lags.keys():
            metrics.CONSUMER_LAG.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        self._shown = set(lags)


class Recovery:
    """Progress of a state recovery, from samples of the records it still has to replay: a log line
    every `every_s` seconds (counts and rate) and the recovered / to recover gauges."""

    def __init__(
        self,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[..., None] = log.info,
        measured: bool = True,
    ) -> None:
        self._every_s, self._clock, self._say, self._measured = every_s, clock, say, measured
        self._running = False
        self._total = self._recovered = self._said_recovered = 0
        self._started = self._said_at = 0.0

    def sample(self, remaining: int | None) -> None:
        """`remaining`: records left to replay now; None when no recovery runs."""
        now = self._clock()
        if remaining is None:
            if self._running:
                self._running = False
                self._recovered = self._total
                self._say(
                    "state recovery done: %d changelog records replayed in %.1f s", self._total, now - self._started
                )
                self._show()
            return
        if not self._running:
            self._running = True
            self._total, self._recovered, self._said_recovered = remaining, 0, 0
            self._started = self._said_at = now
            self._say("state recovery: %d changelog records to replay", remaining)
        # More left than the whole less what is done: a rebalance added partitions to recover.
        self._total = max(self._total, self._recovered + remaining)
        self._recovered = self._total - remaining
        self._show()
        if now - self._said_at >= self._every_s:
            rate = (self._recovered - self._said_recovered) / (now - self._said_at)
            left = f"about {remaining / rate:.0f} s left" if rate > 0 else "none replayed since the last line"
            self._say(
                "state recovery: %d of %d changelog records replayed (%.0f%%), %.0f records/s, %s",
                self._recovered,
                self._total,
                100.0 * self._recovered / self._total if self._total else 100.0,
                rate,
                left,
            )
            self._said_at, self._said_recovered = now, self._recovered

    def _show(self) -> None:
        if self._measured:
            metrics.RECOVERY_TOTAL.set(self._total)
            metrics.RECOVERY_RECOVERED.set(self._recovered)
