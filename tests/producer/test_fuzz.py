"""Whatever a client sends, the producer answers without a 500 (hypothesis, on the real broker)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.stack import Stack

pytestmark = pytest.mark.integration
SEEDS = Path(__file__).parent / "seeds"
KEY = "fuzz_key"
ENDPOINTS = [
    ("PUT", "/events", "usage.json"),
    ("POST", "/ingest", "analytics.json"),
    ("POST", "/ingest/batch", None),
    ("POST", "/api/v1/events", "gamification.json"),
    ("POST", "/api/v1/events/batch", "gamification_batch.json"),
    ("POST", "/topics/orders/events", None),
    ("POST", "/api/events", "segment.json"),
    ("POST", "/cloudevents/orders", None),
    ("POST", "/rules/simulate", None),
    ("POST", "/wait-groups", None),
    ("POST", "/wait-groups/wg_unknown/instances", None),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def mutate(value: Any, path: list[Any], replacement: Any) -> Any:
    """Replace what `path` reaches in `value` (as far as it reaches) with `replacement`."""
    if not path:
        return replacement
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[path[0] % len(keys)]
        return {**value, key: mutate(value[key], path[1:], replacement)}
    if isinstance(value, list) and value:
        index = path[0] % len(value)
        return [*value[:index], mutate(value[index], path[1:], replacement), *value[index + 1 :]]
    return replacement


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    method, path, seed = draw(st.sampled_from(ENDPOINTS))
    if seed is not None and draw(st.booleans()):
        body: Any = orjson.loads((SEEDS / seed).read_bytes())
        body = mutate(body, draw(st.lists(st.integers(0, 20), max_size=4)), draw(json_values))
    else:
        body = draw(json_values)
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "application/cloudevents+json"]))}
    if path.startswith("/cloudevents") and draw(st.booleans()):
        headers = {"Content-Type": "application/json", "ce-specversion": draw(st.sampled_from(["1.0", "x"]))}
        names = st.sampled_from(["ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-userid", "ce-x"])
        printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)
        headers |= draw(st.dictionaries(names, printable))
    # The standard library writes integers of any size, so those reach the server too.
    return method, path, json.dumps(body).encode(), headers


@pytest.fixture(scope="module")
def producer(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import asyncio

    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("fuzz"), api_keys=f"{KEY}:fuzz")
    asyncio.run(stack.start_producer())
    yield stack
    stack.stop()


def test_no_request_gets_a_500(producer: Stack) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests())
    def check(request: tuple[str, str, bytes, dict[str, str]]) -> None:
        method, path, body, headers = request
        connection = http.client.HTTPConnection("127.0.0.1", producer.producer_port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={**headers, "X-API-Key": KEY})
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        assert response.status < 500, (method, path, body, payload)
        assert response.getheader("Content-Type", "").startswith("application/json")
        orjson.loads(payload)

    check()
