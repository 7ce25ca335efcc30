"""The producer's copy of the wait group topic: instances come with their record and go with a tombstone."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core.envelope import utcnow
from app.errors import ValidationError
from app.producer.mirror import INSTANCE, Mirror
from app.scheduling.command import Command, command_key
from app.scheduling.wait_group import Definition, Instance
from tests.support.stack import SCHEMAS

GROUP = Definition("wg_1", {"orders": 1}, "orders", 60.0)


def mirror(retention_s: float) -> Mirror:
    # Never started: records are handed to it as its reader would.
    return Mirror("127.0.0.1:1", "scheduled", "wait_groups", 1, SCHEMAS["command"], retention_s=retention_s)


def instance_record(instance: Instance) -> tuple[bytes, bytes]:
    command = Command(INSTANCE, instance.tenant, instance.id, at=instance.deadline, body=instance.to_dict())
    return command_key(instance.tenant, instance.id), command.encode(SCHEMAS["command"])


async def test_a_tombstone_drops_the_instance_and_events_naming_it_are_refused() -> None:
    copy = mirror(retention_s=3600)
    instance = Instance.start("acme", "wgi_1", GROUP, None, utcnow())
    key, value = instance_record(instance)
    copy._apply("wait_groups", key, value)
    await copy.check_instance("acme", "orders", "wgi_1", timeout_s=1)  # known: accepted
    copy._apply("wait_groups", key, None)  # the worker forgot it
    assert ("acme", "wgi_1") not in copy.instances


async def test_an_instance_past_its_retention_is_refused_before_any_tombstone() -> None:
    copy = mirror(retention_s=60)
    instance = Instance.start("acme", "wgi_2", GROUP, None, utcnow() - timedelta(seconds=121))  # deadline 61 s ago
    copy._apply("wait_groups", *instance_record(instance))
    with pytest.raises(ValidationError) as refused:
        await copy.check_instance("acme", "orders", "wgi_2", timeout_s=1)
    assert (refused.value.field, refused.value.code) == ("wait_group_instance_id", "wait_group_instance_not_found")
    assert "forgotten" in str(refused.value)
