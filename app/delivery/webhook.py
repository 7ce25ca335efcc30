"""POST one delivery to a subscription's URL, signed, retried with backoff until it succeeds or time runs out.

Only to destinations the deployment permits (app/delivery/destination.py)."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from app.core.subscription import Subscription
from app.delivery.backoff import Backoff
from app.delivery.destination import Destinations, literal
from app.delivery.payload import dumps, record_json
from app.delivery.signature import delivery_id, headers, signing_secrets
from app.settings import DeliverySettings

# The delivery id again, as webhook-id carries it: receivers that dedupe on this header keep doing so.
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


@asynccontextmanager
async def sending(
    settings: DeliverySettings, current: Callable[[Subscription], Subscription] | None = None
) -> AsyncIterator[Sender]:
    """A Sender with the deployment's retry settings, that reaches only the destinations it permits.

    `current` gives a subscription as it is now, so that each attempt signs with the secrets in force.
    """
    destinations = Destinations(settings.private_networks)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(destinations))
    async with aiohttp.ClientSession(connector=connector) as session:
        backoff = Backoff(settings.backoff_base_s, settings.backoff_max_s, settings.retry_s)
        yield Sender(session, backoff, settings.timeout_s, destinations=destinations, current=current)


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp would, then keeps only the addresses webhooks may reach.

    At connect time, not only when the subscription is made: a name can resolve to a
    public address then and to a private one later (DNS rebinding).
    """

    def __init__(self, destinations: Destinations) -> None:
        self._destinations = destinations
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        reachable = [entry for entry in found if self._destinations.permits(entry["host"])]
        if not reachable:
            refusal = self._destinations.refusal(host, [entry["host"] for entry in found])
            # aiohttp reports it as a connection error (its text in the brackets): retried, then parked.
            raise OSError(errno.EHOSTUNREACH, refusal)
        return reachable

    async def close(self) -> None:
        await self._inner.close()


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
        destinations: Destinations | None = None,
        current: Callable[[Subscription], Subscription] | None = None,
    ) -> None:
        self._session = session
        # A delivery retried across a secret rotation is signed with the new secret from then on.
        self._current = current or (lambda sub: sub)
        self._destinations = destinations or Destinations()
        self._backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._rng = rng or random.Random()
        self._clock = clock

    async def attempt(self, sub: Subscription, delivery: str, body: bytes) -> str | None:
        """One POST; None if the receiver answered 2xx, else why not."""
        fresh = self._current(sub)
        if fresh == sub:  # the same subscription (equality leaves secrets out), perhaps with a rotated secret
            sub = fresh
        assert sub.url is not None and sub.secret is not None  # only webhook subscriptions get here
        host = urlsplit(sub.url).hostname or ""
        if literal(host):  # aiohttp connects to an address without asking the resolver
            refusal = self._destinations.refusal(host, [host])
            if refusal is not None:
                return refusal
        now = time.time()
        sent = {
            "Content-Type": "application/json",
            **headers(signing_secrets(sub, datetime.fromtimestamp(now, UTC)), delivery, int(now), body),
            DELIVERY_HEADER: delivery,
            "User-Agent": "sluice-webhooks",
        }
        try:
            async with self._session.post(sub.url, data=body, headers=sent, timeout=self._timeout) as response:
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
