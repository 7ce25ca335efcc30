"""Trace context without a broker: parsed, given a child span id, formatted; no SDK unless exporting."""

from __future__ import annotations

import re

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

from app.observability.tracing import Tracing, child_headers, from_http, from_kafka, to_http, to_kafka

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def test_a_received_traceparent_is_the_parent_of_the_requests_span() -> None:
    parent = from_http({"traceparent": TRACEPARENT, "tracestate": "a=1"})
    assert parent is not None
    span = Tracing("test").start("POST /events", parent)
    context = span.get_span_context()
    assert (f"{context.trace_id:032x}", context.trace_flags) == (TRACE, TraceFlags(1))
    assert context.span_id != parent.span_id
    headers = to_http(span)
    assert headers["traceparent"] == f"00-{TRACE}-{context.span_id:016x}-01"
    assert headers["tracestate"] == "a=1"


def test_without_a_traceparent_a_new_unsampled_trace_starts() -> None:
    assert from_http({}) is None
    assert from_http({"traceparent": "not a traceparent"}) is None
    context = Tracing("test").start("POST /events", None).get_span_context()
    assert context.is_valid and context.trace_flags == TraceFlags(0)  # nothing records it


def test_kafka_headers_round_trip() -> None:
    context = SpanContext(int(TRACE, 16), int(PARENT, 16), True, TraceFlags(1))
    headers = to_kafka(context)
    assert headers == [("traceparent", TRACEPARENT.encode())]
    assert from_kafka(headers) == context
    assert from_kafka({"traceparent": TRACEPARENT.encode()}) == context  # faust may give a mapping
    assert from_kafka(None) is None


def test_a_child_keeps_the_trace_and_the_flags_with_a_new_span_id() -> None:
    headers = [("other", b"x"), ("traceparent", TRACEPARENT.encode()), ("tracestate", b"a=1")]
    child = child_headers(headers)
    assert child is not None
    (name, value), state = child
    assert name == "traceparent" and state == ("tracestate", b"a=1")
    match = re.fullmatch(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-01", value)
    assert match is not None
    assert match[1] == TRACE.encode() and match[2] != PARENT.encode()
    assert from_kafka(child) is not None  # what the propagator accepts


def test_a_malformed_or_missing_traceparent_has_no_child() -> None:
    for bad in (
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        f"00-{TRACE}-0000000000000000-01".encode(),  # all-zero span id
        TRACEPARENT.upper().encode(),
        TRACEPARENT.encode()[:-1],
    ):
        assert child_headers([("traceparent", bad)]) is None
    assert child_headers(None) is None
    assert child_headers([]) is None


def test_no_sdk_tracer_provider_is_set_up_without_an_endpoint() -> None:
    tracing = Tracing("test")
    assert not tracing.exporting
    assert not tracing.start("x", None).is_recording()
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
