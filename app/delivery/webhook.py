"""One signed POST of a delivery to a subscription's URL, and its outcome; the body a receiver gets.

Only to destinations the deployment permits (app/delivery/destination.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orjson import Fragment

from app.core.subscription import Subscription
from app.delivery.destination import Destinations
from app.delivery.http1 import Client, ProtocolError, Refused
from app.delivery.payload import dumps, record_json
from app.delivery.signature import delivery_id, headers, signing_secrets
from app.settings import DeliverySettings

# The delivery id again, as webhook-id carries it: receivers that dedupe on this header keep doing so.
DELIVERY_HEADER = "Sluice-Delivery-Id"


def body_of(
    sub: Subscription,
    topic: str,
    partition: int,
    offset: int,
    record: Mapping[str, Any],
    *,
    document: bytes | None = None,
    delivery: str | None = None,
) -> bytes:
    """The JSON a receiver gets; the same bytes on every attempt and on replay.

    `document`: the record's JSON made already (dumps of record_json), for a record that goes to several;
    `delivery`: its delivery id, made already.
    """
    return dumps(
        {
            "id": delivery or delivery_id(sub.key, topic, partition, offset),
            "subscription": sub.name,
            "stream": sub.stream,
            "topic": record.get("topic"),
            "partition": partition,
            "offset": offset,
            "record": record_json(sub.stream, record) if document is None else Fragment(document),
        }
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: accepted (a 2xx), or why not, with the Retry-After the receiver sent."""

    failure: str | None  # None: a 2xx
    status: int | None = None  # None: no answer (refused, unreachable, timed out)
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@asynccontextmanager
async def sending(settings: DeliverySettings) -> AsyncIterator[Sender]:
    """A Sender that reaches only the destinations the deployment permits."""
    destinations = Destinations(settings.private_networks)
    client = Client(destinations)
    try:
        yield Sender(client, settings.timeout_s)
    finally:
        await client.close()


class Sender:
    """Sends deliveries, one attempt at a time; the caller decides when to retry and what a give-up means."""

    def __init__(self, client: Client, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def attempt(
        self, sub: Subscription, delivery: str, body: bytes, extra: Mapping[str, str] | None = None
    ) -> Outcome:
        """One signed POST, with the secrets in force now (a rotated one signs too, for its overlap).

        `extra`: more headers, such as the delivery's `traceparent`.
        """
        assert sub.url is not None and sub.secret is not None  # only webhook subscriptions get here
        now = time.time()
        sent = {
            "Content-Type": "application/json",
            **headers(signing_secrets(sub, datetime.fromtimestamp(now, UTC)), delivery, int(now), body),
            DELIVERY_HEADER: delivery,
            "User-Agent": "sluice-webhooks",
            **(extra or {}),
        }
        try:
            answer = await self._client.post(sub.url, sent, body, self._timeout_s)
        except TimeoutError:
            return Outcome("timed out")
        except Refused as exc:
            return Outcome(str(exc))
        except ProtocolError as exc:
            return Outcome(f"not an HTTP answer: {exc}")
        except OSError as exc:
            return Outcome(f"{type(exc).__name__}: {exc.strerror or exc}")
        if 200 <= answer.status < 300:
            return Outcome(None, answer.status)
        return Outcome(f"HTTP {answer.status}", answer.status, answer.retry_after)
