"""The webhook sender reaches only permitted destinations: by address, and by what a name resolves to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from app.core.subscription import Subscription
from app.delivery.webhook import sending
from app.settings import Settings
from tests.support.http import local_server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A webhook receiver on 127.0.0.1: its port, and the bodies it got."""
    got: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    async with local_server("/hook", hook) as url:
        yield int(url.rsplit(":", 1)[1]), got


def hook_to(url: str) -> Subscription:
    return Subscription("acme", "h", "effects", url=url, secret="s3cret")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_private_destination_is_refused_without_a_connection(
    receiver: tuple[int, list[bytes]], host: str
) -> None:
    port, got = receiver
    async with sending(Settings.from_env({"SLUICE_WEBHOOK_TIMEOUT_S": "2"}).delivery) as sender:
        failure = await sender.attempt(hook_to(f"http://{host}:{port}/hook"), "d1", b"{}")
    assert failure is not None and "not a public address" in failure
    assert got == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_listed_private_network_is_reached(receiver: tuple[int, list[bytes]], host: str) -> None:
    port, got = receiver
    async with sending(
        Settings.from_env(
            {"SLUICE_WEBHOOK_TIMEOUT_S": "2", "SLUICE_WEBHOOK_PRIVATE_NETWORKS": "127.0.0.0/8,::1/128"}
        ).delivery
    ) as sender:
        assert await sender.attempt(hook_to(f"http://{host}:{port}/hook"), "d1", b"{}") is None
    assert got == [b"{}"]
