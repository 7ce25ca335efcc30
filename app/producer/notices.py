"""GET /notices: what Sluice tells a tenant about its subscriptions (disabled, enabled again), after a cursor."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from app.core import cursor
from app.core.tenants import Principal
from app.delivery.reader import Decoded, StreamReader
from app.producer.http import CONTEXT, authenticate, json_response, not_kept
from app.producer.subscriptions import PULL_WAIT_S, page_limit

STREAM = "notices"


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", "/notices", not_kept(list_notices))


class JsonValues:
    """The notices topic's values are JSON objects: decoded as they are read, kept as sent."""

    def get(self, stream: str, topic: str, partition: int, offset: int, value: bytes) -> Decoded | None:
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        return Decoded(stream, record, value) if isinstance(record, dict) else None


def _readable(principal: Principal, notice: dict[str, object]) -> bool:
    """The key's tenant's notices; a key limited to topics gets those about subscriptions to them."""
    if notice.get("tenant") != principal.tenant:
        return False
    return principal.topics is None or notice.get("topic") in principal.topics


async def list_notices(request: web.Request) -> web.Response:
    """GET /notices?after=<cursor>&limit=N: the tenant's notices after the cursor (or the oldest Kafka keeps)."""
    context = request.app[CONTEXT]
    principal = authenticate(request)
    limit = page_limit(request.query.get("limit"))
    after_text = request.query.get("after")
    partitions = context.topology.partitions
    positions = None if after_text is None else cursor.decode(after_text, "after", partitions)
    reader = StreamReader(
        context.settings.kafka.bootstrap,
        context.topology.notices,
        STREAM,
        partitions,
        JsonValues(),
        fetch_max_wait_ms=context.settings.kafka.fetch_max_wait_ms,
    )
    notices: list[dict[str, object]] = []
    try:
        await reader.open(positions, from_end=False, field="after")
        after = reader.cursor
        deadline = time.monotonic() + PULL_WAIT_S
        while len(notices) < limit and time.monotonic() < deadline and not await reader.at_end():
            for item in await reader.read(timeout_ms=200):
                if _readable(principal, item.record):
                    notices.append({**item.record, "cursor": item.cursor})  # and where to resume after it
                    after = item.cursor
                    if len(notices) == limit:
                        break
            else:
                after = reader.cursor
    finally:
        await reader.close()
    return json_response(200, {"notices": notices, "cursor": after})
