"""W3C trace context through Sluice: HTTP request, event record, effect record, webhook; spans exported over OTLP.

Without a collector (no SLUICE_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT) no SDK tracer provider is
set up and nothing is recorded: the context is parsed, given a new span id at each hop, and passed on.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
KafkaHeaders = Sequence[tuple[str, bytes]]
RecordHeaders = KafkaHeaders | Mapping[str, bytes]  # as a consumed record has them (faust's may be a mapping)

PROPAGATOR = TraceContextTextMapPropagator()
# W3C Trace Context, version 00: version-trace_id-parent_id-flags, ids not all zeros.
_TRACEPARENT = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


class _KafkaGetter(Getter[KafkaHeaders]):
    """Reads a Kafka record's headers, (name, bytes) pairs, for the propagator."""

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        for name, value in carrier:
            if name == key:
                return [value.decode("latin-1")]
        return None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [name for name, _ in carrier]


_KAFKA = _KafkaGetter()


def from_http(headers: Mapping[str, str]) -> SpanContext | None:
    """The caller's span of an HTTP request's `traceparent`/`tracestate`, or None (none, or malformed)."""
    return _remote(PROPAGATOR.extract(headers))


def from_kafka(headers: RecordHeaders | None) -> SpanContext | None:
    """The span a Kafka record's `traceparent`/`tracestate` headers name, or None."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else headers or ()
    return _remote(PROPAGATOR.extract(pairs, getter=_KAFKA))


def to_http(span: Span | SpanContext) -> dict[str, str]:
    """`traceparent` (and `tracestate`) naming `span`, for an outgoing HTTP request (a webhook's POST)."""
    carrier: dict[str, str] = {}
    context = span if isinstance(span, SpanContext) else span.get_span_context()
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(context)))
    return carrier


def to_kafka(span: Span | SpanContext) -> list[tuple[str, bytes]]:
    """The same, as Kafka record headers."""
    return [(name, value.encode("latin-1")) for name, value in to_http(span).items()]


def child_headers(headers: RecordHeaders | None) -> list[tuple[str, bytes]] | None:
    """Headers naming a new child span of the one `headers` name (same trace, new span id); None if none.

    What the worker does per event when nothing is exported: parsing with the propagator and
    formatting again cost 15 µs an event, over a tenth of the worker's whole per-event cost on the
    2-core bench machine; this checks the header against the same W3C format and swaps the id in place.
    """
    if not headers:
        return None
    parent = state = None
    for name, value in headers.items() if isinstance(headers, Mapping) else headers:
        if name == TRACEPARENT:
            parent = value
        elif name == TRACESTATE:
            state = value
    if parent is None or not _TRACEPARENT.fullmatch(parent):
        return None
    child = b"%s%016x%s" % (parent[:36], _span_id(), parent[52:])
    return [(TRACEPARENT, child)] if state is None else [(TRACEPARENT, child), (TRACESTATE, state)]


def _remote(context: Any) -> SpanContext | None:
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def _span_id() -> int:
    return random.getrandbits(64) or 1  # an all-zero id is invalid


class Tracing:
    """This process's spans: recorded and exported over OTLP/HTTP when `endpoint` is set; else
    spans that only carry a context (a new span id under the parent's trace, or a new trace)."""

    def __init__(self, service: str, endpoint: str = "") -> None:
        self._provider: Any = None
        self._tracer: trace.Tracer | None = None
        if endpoint:
            # Imported only when exporting: the SDK is not loaded, let alone set up, otherwise.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
            self._provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
            )
            self._tracer = self._provider.get_tracer("sluice")
            log.info("exporting spans of %s to %s", service, endpoint)

    @property
    def exporting(self) -> bool:
        return self._tracer is not None

    def start(
        self,
        name: str,
        parent: SpanContext | None,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, str | int] | None = None,
        start_time: int | None = None,
    ) -> Span:
        """A span, child of `parent` (a new trace without one); end it with `.end()`."""
        if self._tracer is not None:
            context = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
            return self._tracer.start_span(name, context, kind, attributes=attributes, start_time=start_time)
        if parent is None:
            return NonRecordingSpan(SpanContext(random.getrandbits(128) or 1, _span_id(), False, TraceFlags(0)))
        return NonRecordingSpan(SpanContext(parent.trace_id, _span_id(), False, parent.trace_flags, parent.trace_state))

    def end(self, spans: Iterable[Span], end_time: int | None = None) -> None:
        """End spans together (the worker's, when their batch's writes are acknowledged)."""
        if self._tracer is not None:
            for span in spans:
                span.end(end_time)

    def shutdown(self) -> None:
        """Export what is left; at the end of the process."""
        if self._provider is not None:
            self._provider.shutdown()
