"""The CloudEvents SDK (cloudevents 2.2.0), unmodified: structured and binary mode land with `data` as an object."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent as LegacyCloudEvent

from tests.support.stack import REPO, Stack, read_until

pytestmark = pytest.mark.integration
KEY = "ce_key_1"

Encoder = Callable[[dict[str, Any], dict[str, Any]], tuple[Mapping[str, str], bytes]]


def core_binary(attributes: dict[str, Any], data: dict[str, Any]) -> tuple[Mapping[str, str], bytes]:
    message = to_binary_event(CloudEvent(attributes, data))
    return message.headers, message.body


def core_structured(attributes: dict[str, Any], data: dict[str, Any]) -> tuple[Mapping[str, str], bytes]:
    message = to_structured_event(CloudEvent(attributes, data))
    return message.headers, message.body


def legacy_binary(attributes: dict[str, Any], data: dict[str, Any]) -> tuple[Mapping[str, str], bytes]:
    return to_binary(LegacyCloudEvent(attributes, data))


def legacy_structured(attributes: dict[str, Any], data: dict[str, Any]) -> tuple[Mapping[str, str], bytes]:
    return to_structured(LegacyCloudEvent(attributes, data))


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("cloudevents"), api_keys=f"{KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


@pytest.mark.parametrize(
    ("encode", "binary"),
    [(core_binary, True), (core_structured, False), (legacy_binary, True), (legacy_structured, False)],
    ids=["to_binary_event", "to_structured_event", "v1-to_binary", "v1-to_structured"],
)
async def test_the_event_lands_with_data_as_an_object(stack: Stack, encode: Encoder, binary: bool) -> None:
    user = "user-" + uuid.uuid4().hex[:8]
    attributes = {"type": "com.example.signup", "source": "/shop", "subject": user}  # no datacontenttype
    data = {"plan": "pro", "seats": 3, "trial": {"days": 14}}
    headers, body = encode(attributes, data)
    if binary:
        assert "content-type" not in {name.lower() for name in headers}  # what the SDK sends for dict data
    # As the SDK's README sends it: requests adds no Content-Type of its own to a bytes body.
    response = await asyncio.to_thread(
        requests.post,
        f"{stack.url}/cloudevents/orders",
        data=body,
        headers={**headers, "X-API-Key": KEY},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]
    records = await read_until(
        stack.bootstrap,
        stack.topic("events.orders"),
        lambda rs: any(r["id"] == event_id for r in rs),
        describe="the event",
    )
    (record,) = [r for r in records if r["id"] == event_id]
    assert (record["type"], record["user_id"], record["dialect"]) == ("com.example.signup", user, "cloudevents")
    assert orjson.loads(record["data"]) == data
    if binary:  # no Content-Type was sent, so none is made up
        assert "datacontenttype" not in orjson.loads(record["metadata"])


async def test_the_documented_snippet_works_as_it_stands(stack: Stack) -> None:
    text = (REPO / "docs" / "keep-your-sdk.md").read_text()
    section = text.split("## CloudEvents SDK", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    env = {**os.environ, "SLUICE_API_KEY": KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code.replace("http://localhost:8080", stack.url), env=env
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0

    def landed(records: list[dict[str, Any]]) -> bool:
        return any(r["user_id"] == "user_42" and orjson.loads(r["data"]) == {"plan": "pro"} for r in records)

    await read_until(stack.bootstrap, stack.topic("events.orders"), landed, describe="the snippet's event")
