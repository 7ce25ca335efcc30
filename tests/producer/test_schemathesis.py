"""The producer against its own /openapi.json, by schemathesis: no server error, no answer the spec does not allow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stack import Stack
from tests.worker.test_crash import wait_ready

pytestmark = pytest.mark.integration
KEY = "schema_key"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 6  # per operation and key: about 600 requests in all


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    # The whole deployment, so that a 503 can only mean a fault: a worker for the tables, a token secret.
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("schemathesis"),
        api_keys=f"{KEY}:acme",
        SLUICE_EFFECT_TIMEOUT_S="0.5",
        SLUICE_TOKEN_SECRET="schemathesis-secret-of-at-least-32-bytes",
    )
    await stack.start_producer()
    stack.start("worker")
    await wait_ready(stack.processes["worker"], 0)
    yield stack
    stack.stop()


def failures(url: str, headers: dict[str, str]) -> list[str]:
    """Every operation's generated cases sent with `headers`; what failed a check, per operation."""
    found = []
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/stream"):
            continue  # a stream never ends, so no whole answer to check; tests/delivery drive the SSE routes

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def send(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        try:
            send()
        except (Exception, BaseExceptionGroup) as exc:  # a failed check: name the operation and the answer
            found.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:600]}")
    return found


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {}], ids=["with a key", "without a key"])
async def test_every_answer_is_one_the_spec_allows(stack: Stack, headers: dict[str, str]) -> None:
    found = await asyncio.to_thread(failures, stack.url, headers)
    assert not found, "\n\n".join(found)
