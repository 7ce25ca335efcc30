"""POST one delivery to a subscription's URL, signed, retried with backoff until it succeeds or time runs out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from app.delivery.backoff import Backoff
from app.delivery.payload import dumps, record_json
from app.delivery.signature import HEADER, delivery_id, sign
from app.delivery.subscription import Subscription
from app.settings import Settings

DELIVERY_HEADER = "Sluice-Delivery-Id"


def body_of(sub: Subscription, topic: str, partition: int, offset: int, record: Mapping[str, Any]) -> bytes:
    """The JSON a receiver gets; the same bytes on every attempt and on replay."""
    return dumps(
        {
            "id": delivery_id(sub.key, topic, partition, offset),
            "subscription": sub.name,
            "stream": sub.stream,
            "topic": record.get("topic"),
            "partition": partition,
            "offset": offset,
            "record": record_json(sub.stream, record),
        }
    )


def sender_of(settings: Settings, session: aiohttp.ClientSession) -> Sender:
    backoff = Backoff(settings.webhook_backoff_base_s, settings.webhook_backoff_max_s, settings.webhook_retry_s)
    return Sender(session, backoff, settings.webhook_timeout_s)


class Sender:
    """Sends deliveries over one shared HTTP session; the caller decides what a give-up means (parking)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        backoff: Backoff,
        timeout_s: float,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._rng = rng or random.Random()
        self._clock = clock

    async def attempt(self, sub: Subscription, delivery: str, body: bytes) -> str | None:
        """One POST; None if the receiver answered 2xx, else why not."""
        assert sub.url is not None and sub.secret is not None  # only webhook subscriptions get here
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(sub.secret, int(time.time()), body),
            DELIVERY_HEADER: delivery,
            "User-Agent": "sluice-webhooks",
        }
        try:
            async with self._session.post(sub.url, data=body, headers=headers, timeout=self._timeout) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return "timed out"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    async def deliver(self, sub: Subscription, delivery: str, body: bytes) -> str | None:
        """Attempt until a 2xx (None) or until the backoff's total time is spent (the last failure)."""
        started = self._clock()
        attempt = 1
        while True:
            failure = await self.attempt(sub, delivery, body)
            if failure is None:
                return None
            wait = self._backoff.next_delay(attempt, self._clock() - started, self._rng)
            if wait is None:
                return failure
            await asyncio.sleep(wait)
            attempt += 1
