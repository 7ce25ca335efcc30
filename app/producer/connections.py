"""The producer's listening socket: a per-process connection cap, past which a connection gets a 503 and is closed."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from app.observability import metrics

log = logging.getLogger(__name__)

REFUSAL = orjson.dumps(
    {
        "error": {
            "code": "too_many_connections",
            "message": "this producer process holds as many connections as it takes; retry",
            "field": "connection",
        }
    }
)
# An answer of its own, with no request read: the connection is refused before aiohttp parses anything.
RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(REFUSAL), REFUSAL)
)


LINGER_S = 1.0


class _Refused(asyncio.Protocol):
    """Answers 503 at once, then reads and drops what the client sends for a moment before closing:
    closing a socket with unread data resets it, and the client could lose the answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(RESPONSE)
        self._closing = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._closing.cancel()
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing.cancel()


class _Counted(asyncio.Protocol):
    """aiohttp's handler of one connection, counted from its accept to its close.

    Counted here, not by aiohttp's own list: a burst of connections is accepted in one go,
    before any of them is made, so that list would let the whole burst past the cap.
    """

    def __init__(self, handler: asyncio.Protocol, live: set[_Counted]) -> None:
        self._handler = handler
        self._live = live
        live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


async def listen(server: web.Server, host: str, port: int, *, most: int, reuse_port: bool) -> asyncio.Server:
    """Serve `server` (an AppRunner's) on host:port, taking at most `most` connections at once."""
    live: set[_Counted] = set()
    said = False

    def protocol() -> asyncio.BaseProtocol:
        nonlocal said
        if len(live) < most:
            said = False
            return _Counted(server(), live)
        metrics.CONNECTIONS_REFUSED.inc()
        if not said:  # once per crowd, not per refused connection
            log.warning("%d connections open: refusing new ones until some close", most)
            said = True
        return _Refused()

    return await asyncio.get_running_loop().create_server(protocol, host, port, reuse_port=reuse_port, backlog=1024)
