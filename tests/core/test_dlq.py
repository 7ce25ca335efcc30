"""Refused input listed and replayed, the pure parts: parameters, cursors, ids, merge patch, replayed bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.core.dlq import (
    NEWEST,
    OLDEST,
    BatchShape,
    Cursor,
    LetterId,
    Replay,
    Selection,
    body_value,
    item,
    parse_listing,
    parse_replay,
    reason_matches,
    replay_body,
)
from app.core.envelope import derived_event_ids, new_event_id
from app.core.merge_patch import merge_patch
from app.dialects import gamification, pubsub
from app.dialects.base import Request
from app.errors import ValidationError

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
PARTITIONS = 4


# RFC 7396, Appendix A: every example, as (target, patch, result).
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_gives_every_result_of_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_changes_neither_argument() -> None:
    target, patch = {"a": {"b": 1}, "c": 2}, {"a": {"b": None, "d": 3}}
    assert merge_patch(target, patch) == {"a": {"d": 3}, "c": 2}
    assert (target, patch) == ({"a": {"b": 1}, "c": 2}, {"a": {"b": None, "d": 3}})


@pytest.mark.parametrize(
    ("code", "reason", "matches"),
    [
        ("validation.required", None, True),
        ("validation.required", "validation.required", True),
        ("validation.required", "validation", True),
        ("validation", "validation", True),
        ("validation_other", "validation", False),
        ("validation.required", "validation.req", False),
        ("malformed_body", "validation", False),
    ],
)
def test_a_reason_is_the_code_or_a_dotted_prefix_of_it(code: str, reason: str | None, matches: bool) -> None:
    assert reason_matches(code, reason) is matches


def test_a_listing_without_parameters_is_the_oldest_hundred() -> None:
    assert parse_listing([], PARTITIONS) == parse_listing([("order", "oldest"), ("limit", "100")], PARTITIONS)
    listing = parse_listing([], PARTITIONS)
    assert (listing.limit, listing.order, listing.after, listing.selection) == (100, OLDEST, None, Selection())


def test_a_listing_reads_every_parameter() -> None:
    after = Cursor(NEWEST, {0: 7, 3: 2}).encode()
    listing = parse_listing(
        [
            ("reason", "validation"),
            ("from", "2026-05-04T10:00:00Z"),
            ("to", "2026-05-04T14:00:00+02:00"),
            ("limit", "20"),
            ("order", "newest"),
            ("after", after),
        ],
        PARTITIONS,
    )
    assert listing.selection == Selection(
        "validation", datetime(2026, 5, 4, 10, tzinfo=UTC), datetime(2026, 5, 4, 12, tzinfo=UTC)
    )
    assert (listing.limit, listing.order, listing.after) == (20, NEWEST, Cursor(NEWEST, {0: 7, 3: 2}))


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ([("limit", "0")], "limit", "validation.range"),
        ([("limit", "1001")], "limit", "validation.range"),
        ([("limit", "ten")], "limit", "validation.range"),
        ([("limit", "²")], "limit", "validation.range"),
        ([("from", "yesterday")], "from", "validation.format"),
        ([("from", "2026-05-04T10:00:00")], "from", "validation.format"),
        ([("to", "0001-01-01T00:00:00+01:00")], "to", "validation.range"),
        ([("from", "2026-05-04T10:00:00Z"), ("to", "2026-05-04T09:00:00Z")], "to", "validation.range"),
        ([("reason", "")], "reason", "validation.type"),
        ([("reason", "x" * 201)], "reason", "validation.type"),
        ([("order", "random")], "order", "validation.enum"),
        ([("after", "!!")], "after", "invalid_cursor"),
        ([("after", Cursor(OLDEST, {9: 1}).encode())], "after", "invalid_cursor"),
        ([("after", Cursor(NEWEST, {0: 1}).encode())], "after", "invalid_cursor"),
        ([("tenant", "other")], "tenant", "validation.unknown"),
        ([("limit", "5"), ("limit", "6")], "limit", "validation.repeated"),
    ],
)
def test_a_bad_listing_parameter_is_refused_by_name(params: list[tuple[str, str]], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_listing(params, PARTITIONS)
    assert (refused.value.field, refused.value.code) == (field, code)


def test_a_cursor_keeps_its_order_and_positions() -> None:
    for order in (OLDEST, NEWEST):
        given = Cursor(order, {0: 0, 1: 12, 3: 10**12})
        assert Cursor.decode(given.encode(), "after", PARTITIONS, order) == given
    assert Cursor.decode(Cursor(OLDEST, {}).encode(), "after", PARTITIONS, OLDEST).positions == {}


def test_a_dead_letter_id_is_partition_and_offset() -> None:
    assert str(LetterId(2, 41)) == "2:41"
    assert LetterId.parse("2:41", "ids[0]", PARTITIONS) == LetterId(2, 41)
    for bad in ("2-41", "2:", ":41", "a:1", "4:1", 7, "2:41:1"):
        with pytest.raises(ValidationError) as refused:
            LetterId.parse(bad, "filter.ids[3]", PARTITIONS)
        assert refused.value.field == "filter.ids[3]"


def test_a_replay_reads_filter_patch_and_dry_run() -> None:
    replay = parse_replay(
        {
            "filter": {"reason": "validation.required", "from": "2026-05-04T10:00:00Z", "ids": ["0:1", "3:9", "0:1"]},
            "patch": {"data": {"user_id": "u1"}},
            "dry_run": True,
        },
        PARTITIONS,
    )
    assert replay.selection == Selection(
        "validation.required",
        datetime(2026, 5, 4, 10, tzinfo=UTC),
        None,
        frozenset({LetterId(0, 1), LetterId(3, 9)}),
    )
    assert (replay.patch, replay.patched, replay.dry_run, replay.limit) == (
        {"data": {"user_id": "u1"}},
        True,
        True,
        1000,
    )


def test_a_replay_without_a_patch_sends_the_bodies_as_kept_and_null_is_a_patch() -> None:
    assert parse_replay({}, PARTITIONS) == Replay()
    assert parse_replay({}, PARTITIONS).apply({"a": 1}) == {"a": 1}
    null = parse_replay({"patch": None}, PARTITIONS)
    assert null.patched and null.apply({"a": 1}) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"filters": {}}, "filters"),
        ({"filter": []}, "filter"),
        ({"filter": {"code": "x"}}, "filter.code"),
        ({"filter": {"reason": 3}}, "filter.reason"),
        ({"filter": {"from": "soon"}}, "filter.from"),
        ({"filter": {"to": 1}}, "filter.to"),
        ({"filter": {"from": "2026-05-04T10:00:00Z", "to": "2026-05-04T09:00:00Z"}}, "filter.to"),
        ({"filter": {"ids": []}}, "filter.ids"),
        ({"filter": {"ids": "0:1"}}, "filter.ids"),
        ({"filter": {"ids": ["0:1", "zero"]}}, "filter.ids[1]"),
        ({"filter": {"ids": ["0:1"] * 1001}}, "filter.ids"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"after": 5}, "after"),
        ({"after": "!!"}, "after"),
        ({"after": Cursor(NEWEST, {}).encode()}, "after"),
    ],
)
def test_a_bad_replay_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_replay(body, PARTITIONS)
    assert refused.value.field == field


def test_a_selection_matches_on_every_criterion() -> None:
    at = datetime(2026, 5, 4, 11, tzinfo=UTC)
    here = LetterId(1, 5)
    assert Selection().matches(here, "anything", at)
    assert Selection(start=at, end=at).matches(here, "x", at)
    assert not Selection(start=datetime(2026, 5, 4, 11, 0, 0, 1000, tzinfo=UTC)).matches(here, "x", at)
    assert not Selection(end=datetime(2026, 5, 4, 10, 59, tzinfo=UTC)).matches(here, "x", at)
    assert Selection(ids=frozenset({here})).matches(here, "x", at)
    assert not Selection(ids=frozenset({LetterId(1, 6)})).matches(here, "x", at)
    assert not Selection(reason="validation").matches(here, "malformed_body", at)


def test_a_kept_body_shows_as_json_or_else_as_text() -> None:
    assert body_value(b'{"a": [1, 2]}') == ({"a": [1, 2]}, "json")
    assert body_value(b'{"a": ') == ('{"a": ', "text")
    assert body_value(b"") == ("", "text")
    assert body_value(b"\xff\xfeok") == ("\ufffd\ufffdok", "text")


def test_an_item_has_the_fields_the_console_reads() -> None:
    record = {
        "received_at": datetime(2026, 5, 4, 11, 0, 0, 250000, tzinfo=UTC),
        "stage": "producer",
        "source": "POST /topics/{topic_slug}/events",
        "tenant": "acme",
        "code": "validation.required",
        "field": "data",
        "message": "is required",
        "content_type": "application/json",
        "body": b"{}",
        "topic": "orders",
    }
    assert item(LetterId(0, 3), record, "orders") == {
        "id": "0:3",
        "received_at": "2026-05-04T11:00:00.250Z",
        "stage": "producer",
        "source": "POST /topics/{topic_slug}/events",
        "topic": "orders",
        "code": "validation.required",
        "field": "data",
        "message": "is required",
        "content_type": "application/json",
        "body": {},
        "body_encoding": "json",
    }


PATCH = Replay(patch={"user_id": "u9", "junk": None}, patched=True)


def test_a_patch_applies_to_a_single_body() -> None:
    assert replay_body({"junk": 1, "type": "t"}, None, PATCH, NOW) == {"type": "t", "user_id": "u9"}


def test_a_patch_applies_to_each_event_of_a_kept_batch() -> None:
    batch = {"events": [{"type": "a", "junk": 1}, {"type": "b", "user_id": "u1"}]}
    assert replay_body(batch, BatchShape("events"), PATCH, NOW) == {
        "events": [{"type": "a", "user_id": "u9"}, {"type": "b", "user_id": "u9"}]
    }
    assert replay_body(batch, BatchShape("events"), Replay(), NOW) is batch


def test_an_event_kept_alone_out_of_a_batch_goes_back_in_a_batch_of_one() -> None:
    assert replay_body({"type": "a"}, BatchShape("events"), PATCH, NOW) == {"events": [{"type": "a", "user_id": "u9"}]}
    assert replay_body({"type": "a"}, BatchShape("batch", stamp="sentAt"), Replay(), NOW) == {
        "batch": [{"type": "a"}],
        "sentAt": "2026-05-04T12:00:00.000Z",
    }
    cloudevents = BatchShape(None)
    assert replay_body({"id": "1"}, cloudevents, Replay(), NOW) == [{"id": "1"}]
    assert replay_body([{"id": "1"}], cloudevents, Replay(patch={"id": "2"}, patched=True), NOW) == [{"id": "2"}]


def test_made_up_ids_derive_from_the_seed_while_replaying() -> None:
    with derived_event_ids("dlq.acme/0:5"):
        first = [new_event_id(), new_event_id()]
    with derived_event_ids("dlq.acme/0:5"):
        again = [new_event_id(), new_event_id()]
    with derived_event_ids("dlq.acme/0:6"):
        other = new_event_id()
    assert first == again
    assert first[0] != first[1] and other not in first
    assert all(event_id.startswith("evt_") and len(event_id) == 36 for event_id in [*first, other])
    assert new_event_id() != new_event_id()  # outside a replay: random again


def test_a_dialect_without_an_id_gives_the_same_one_on_each_replay() -> None:
    request = Request(tenant="acme", topic="orders", received_at=NOW)

    def ids() -> list[str]:
        with derived_event_ids("dlq.acme/2:7"):
            one = pubsub.parse({"data": {"user_id": "u"}}, request).accepted[0][1].id
            batch = gamification.parse_batch(
                {"events": [{"user_id": "u", "type": "t"}, {"user_id": "u", "type": "t", "event_id": "mine"}]},
                request,
            )
            return [one, *(event.id for _, event in batch.accepted)]

    first = ids()
    assert first == ids()
    assert first[2] == "mine" and len(set(first)) == 3
