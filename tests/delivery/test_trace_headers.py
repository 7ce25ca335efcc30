"""Without an exporter, a webhook's POST carries the record's trace under a new span id, at no SDK cost."""

from __future__ import annotations

from app.delivery.dispatcher import _child

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_post_names_a_child_of_the_records_span() -> None:
    headers = _child([("sluice-delivery-id", b"dlv_1"), ("traceparent", PARENT), ("tracestate", b"vendor=1")])
    assert headers is not None
    version, trace, span, flags = headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span != "b7ad6b7169203331" and len(span) == 16
    assert headers["tracestate"] == "vendor=1"


def test_a_record_without_a_valid_trace_sends_none() -> None:
    assert _child([("sluice-delivery-id", b"dlv_1")]) is None
    assert _child([("traceparent", b"00-zz-yy-01")]) is None
