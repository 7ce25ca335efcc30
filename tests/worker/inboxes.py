"""An Inbox a record at a time, as tests put and take them (the worker hands on a partition's run at once)."""

from __future__ import annotations

from faust.types import Message

from app.worker.inbox import Inbox


def put(inbox: Inbox, message: Message) -> bool:
    """`put_many` of one record: False if the inbox is full now."""
    return inbox.put_many(message.tp, [message])


def taken(runs: list[list[Message]]) -> list[Message]:
    """The records of `take_runs`, in the order taken."""
    return [message for run in runs for message in run]
