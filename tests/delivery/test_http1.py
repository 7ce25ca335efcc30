"""The webhook HTTP/1.1 client against bare local servers: framing, keep-alive, interim answers, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_network

import pytest

from app.delivery.destination import Destinations
from app.delivery.http1 import Client, ProtocolError, Refused

LOCAL = Destinations((ip_network("127.0.0.0/8"),))
Answer = Callable[[int, bytes], Awaitable[bytes | None]]  # (request number, request) -> answer bytes; None: hang


@dataclass
class Server:
    port: int
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def serving(answer: Answer, *, close_after: bool = False) -> AsyncIterator[Server]:
    """A bare HTTP/1.1 server answering each request with answer(n, request); close_after: close after each."""
    server = Server(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
                request = head + await reader.readexactly(length)
                server.requests.append(request)
                answered = await answer(len(server.requests), request)
                if answered is None:
                    await asyncio.sleep(3600)
                writer.write(answered or b"")
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def fixed(text: bytes) -> Answer:
    async def answer(n: int, request: bytes) -> bytes:
        return text

    return answer


async def post(client: Client, url: str, timeout_s: float = 2.0) -> tuple[int, str | None]:
    answer = await client.post(url, {"Content-Type": "application/json"}, b'{"a": 1}', timeout_s)
    return answer.status, answer.retry_after


async def test_a_kept_alive_connection_carries_the_next_request() -> None:
    async with serving(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as server:
        client = Client(LOCAL)
        assert [await post(client, server.url()) for _ in range(3)] == [(200, None)] * 3
        await client.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 8\r\n" in first and first.endswith(b'\r\n\r\n{"a": 1}')


async def test_a_chunked_answer_is_read_to_its_end_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"  # a chunk extension, and a trailer
    )
    async with serving(fixed(chunked)) as server:
        client = Client(LOCAL)
        assert [await post(client, server.url()) for _ in range(2)] == [(202, None)] * 2
        await client.close()
    assert server.connections == 1


async def test_an_answer_delimited_by_the_end_of_the_connection_is_read_and_not_reused() -> None:
    async with serving(fixed(b"HTTP/1.0 500 Oops\r\n\r\nsorry"), close_after=True) as server:
        client = Client(LOCAL)
        assert [await post(client, server.url()) for _ in range(2)] == [(500, None)] * 2
        await client.close()
    assert server.connections == 2


async def test_retry_after_and_interim_answers() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n"
    async with serving(fixed(answer)) as server:
        client = Client(LOCAL)
        assert await post(client, server.url("/hook?token=abc")) == (429, "120")
        await client.close()
    assert server.requests[0].startswith(b"POST /hook?token=abc HTTP/1.1\r\n")


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_failing() -> None:
    async with serving(fixed(b"HTTP/1.1 204 No Content\r\n\r\n"), close_after=True) as server:
        client = Client(LOCAL)
        assert await post(client, server.url()) == (204, None)
        await asyncio.sleep(0.1)  # the server's close reaches the idle connection
        assert await post(client, server.url()) == (204, None)
        await client.close()
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_an_answer_that_never_comes_times_out() -> None:
    async def hang(n: int, request: bytes) -> None:
        return None

    async with serving(hang) as server:
        client = Client(LOCAL)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(client, server.url(), timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 1.5
        await client.close()


async def test_garbage_is_a_protocol_error() -> None:
    async with serving(fixed(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as server:
        client = Client(LOCAL)
        with pytest.raises(ProtocolError):
            await post(client, server.url())
        await client.close()


async def test_a_destination_not_permitted_is_refused_before_connecting() -> None:
    async with serving(fixed(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        client = Client(Destinations())
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(Refused, match="not a public address"):
                await post(client, server.url().replace("127.0.0.1", host))
        await client.close()
    assert server.connections == 0


async def test_user_info_in_the_url_is_sent_as_basic_authentication() -> None:
    async with serving(fixed(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        client = Client(LOCAL)
        await post(client, f"http://hook%40user:p%3Ass@127.0.0.1:{server.port}/hook")
        await client.close()
    # base64 of "hook@user:p:ss"
    assert b"\r\nAuthorization: Basic aG9va0B1c2VyOnA6c3M=\r\n" in server.requests[0]
