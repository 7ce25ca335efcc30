"""Which route a dead letter came from, and how its batch holds events: the tables replay reads, checked."""

from __future__ import annotations

from app.dialects import gamification, product_analytics, segment, segment_v1, usage
from app.producer.dlq import BATCHES, ROUTES, batch_shape

BATCH_DIALECTS = (usage.DIALECT, product_analytics.BATCH, gamification.BATCH, segment.DIALECT, segment_v1.BATCH)


def test_every_batch_route_and_only_those_say_how_their_batch_holds_its_events() -> None:
    assert set(BATCHES) == {source for source, dialect in ROUTES.items() if dialect in BATCH_DIALECTS}


def test_a_dead_letter_names_its_route_as_the_producer_writes_its_source() -> None:
    assert {
        "PUT /events",
        "POST /topics/{topic_slug}/events",
        "POST /cloudevents/{topic_slug}",
        "POST /v1/track",
    } <= set(ROUTES)


def test_a_cloudevents_batch_is_a_json_array_and_a_structured_event_is_not_a_batch() -> None:
    source = "POST /cloudevents/{topic_slug}"
    shape = batch_shape(source, "application/cloudevents-batch+json")
    assert shape is not None and shape.key is None
    assert batch_shape(source, "application/cloudevents+json") is None
    assert batch_shape("POST /ingest", "application/json") is None
    assert batch_shape("POST /api/events", "application/json") == BATCHES["POST /api/events"]
