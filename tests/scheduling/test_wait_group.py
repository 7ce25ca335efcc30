"""Wait groups' pure parts: definitions from HTTP bodies, an instance's progress, its one outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.errors import ValidationError
from app.scheduling.wait_group import (
    COMPLETED,
    OPEN,
    TIMED_OUT,
    Definition,
    Instance,
    parse_definition,
    parse_instance_body,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
GROUP = Definition("wg_1", {"orders": 2, "usage": 1}, "orders", 10.0)


def known(slug: str, field: str) -> None:
    if slug not in {"orders", "usage"}:
        raise ValidationError("no such topic", field=field)


def test_a_list_of_topics_means_one_each_and_an_object_gives_counts() -> None:
    listed = parse_definition({"topics": ["orders", "usage"], "target_topic": "orders", "timeout_s": 5}, "g", known)
    assert dict(listed.expected) == {"orders": 1, "usage": 1}
    counted = parse_definition({"topics": {"orders": 3}, "target_topic": "usage", "timeout_s": 0.5}, "g", known)
    assert (dict(counted.expected), counted.target_topic, counted.timeout_s) == ({"orders": 3}, "usage", 0.5)
    assert Definition.from_dict(counted.as_dict()) == counted


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"topics": ["orders"], "target_topic": "orders"}, "timeout_s"),
        ({"topics": "orders", "target_topic": "orders", "timeout_s": 1}, "topics"),
        ({"topics": {}, "target_topic": "orders", "timeout_s": 1}, "topics"),
        ({"topics": [1], "target_topic": "orders", "timeout_s": 1}, "topics[0]"),
        ({"topics": ["orders", "nope"], "target_topic": "orders", "timeout_s": 1}, "topics[1]"),
        ({"topics": {"orders": True}, "target_topic": "orders", "timeout_s": 1}, "topics.orders"),
        ({"topics": {"orders": 1001}, "target_topic": "orders", "timeout_s": 1}, "topics.orders"),
        ({"topics": ["orders"], "target_topic": "nope", "timeout_s": 1}, "target_topic"),
        ({"topics": ["orders"], "target_topic": "orders", "timeout_s": 0}, "timeout_s"),
        ({"topics": ["orders"], "target_topic": "orders", "timeout_s": "5"}, "timeout_s"),
        ({"topics": ["orders"], "target_topic": "orders", "timeout_s": 1, "extra": 1}, "extra"),
    ],
)
def test_a_bad_definition_names_its_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_definition(body, "g", known)
    assert caught.value.field == field


def test_an_instance_body_is_optional_and_closed() -> None:
    assert parse_instance_body(None) is None
    assert parse_instance_body({"user_id": "u1"}) == "u1"
    with pytest.raises(ValidationError) as caught:
        parse_instance_body({"user": "u1"})
    assert caught.value.field == "user"


def test_it_completes_when_every_count_is_met_in_any_order() -> None:
    instance = Instance.start("acme", "wgi_1", GROUP, None, NOW)
    assert (instance.user_id, instance.deadline) == ("wgi_1", NOW + timedelta(seconds=10))
    for topic, event_id in (("orders", "o1"), ("usage", "u1"), ("orders", "o1"), ("segment", "s1")):
        instance = instance.arrive(topic, event_id)
        assert instance.decide(NOW) is None  # a repeat and an unexpected topic do not count
    instance = instance.arrive("orders", "o2")
    assert instance.decide(NOW) == COMPLETED
    assert instance.arrive("orders", "o3") == instance  # a full topic takes no more
    outcome = instance.outcome(COMPLETED, NOW)
    assert (outcome.id, outcome.topic, outcome.type) == ("wgi_1:completed", "orders", "wait_group.completed")
    assert outcome.data["event_ids"] == ["o1", "o2", "u1"]
    assert outcome.data["missing"] == {}
    assert Instance.from_dict(instance.to_dict()) == instance


def test_it_times_out_at_the_deadline_and_late_events_do_not_count() -> None:
    instance = Instance.start("acme", "wgi_2", GROUP, "user-7", NOW).arrive("orders", "o1")
    deadline = instance.deadline
    assert instance.decide(deadline - timedelta(milliseconds=1)) is None
    assert instance.decide(deadline) == TIMED_OUT
    late = instance.arrive("orders", "o2", deadline + timedelta(seconds=1)).arrive("usage", "u1")
    assert late.arrived == {"orders": ("o1",), "usage": ("u1",)}
    outcome = instance.outcome(TIMED_OUT, deadline)
    assert (outcome.id, outcome.user_id) == ("wgi_2:timed_out", "user-7")
    assert outcome.data["missing"] == {"orders": 1, "usage": 1}


def test_it_ends_once() -> None:
    done = replace(Instance.start("acme", "wgi_3", GROUP, None, NOW), status=COMPLETED)
    assert done.decide(NOW + timedelta(days=1)) is None
    assert done.arrive("orders", "o1") == done
    assert Instance.start("acme", "wgi_4", GROUP, None, NOW).status == OPEN


def test_an_ended_instance_is_due_again_to_be_forgotten_after_its_retention() -> None:
    instance = Instance.start("acme", "wgi_5", GROUP, None, NOW)
    week = 7 * 24 * 3600
    assert instance.due(week) == instance.deadline  # open: due at its deadline
    ended = replace(instance, status=TIMED_OUT)
    assert ended.due(week) == ended.forget_at(week) == instance.deadline + timedelta(days=7)
    assert not ended.forgotten(instance.deadline + timedelta(days=7, seconds=-1), week)
    assert ended.forgotten(instance.deadline + timedelta(days=7), week)
    # An open instance is never forgotten: it ends at its deadline first.
    assert not instance.forgotten(instance.deadline + timedelta(days=30), week)
