"""Incremental fetch sessions (Kafka's KIP-227) for an aiokafka client: a fetch names only what changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.fetch import FetchRequest, FetchRequestStruct

Partition = tuple[str, int]
Wanted = dict[Partition, tuple[int, int]]  # partition -> (fetch offset, max bytes)
Topics = list[tuple[str, list[tuple[int, int, int]]]]  # aiokafka's FetchRequest.topics
Send = Callable[..., Awaitable[Any]]

SESSIONS_FROM = 7  # the first FetchRequest version with a session id and epoch
NO_SESSION = 0  # the session id of a client without one
FULL = 0  # the epoch of a whole fetch: it closes the session it names, and asks for a new one
LAST_EPOCH = 2**31 - 1  # after it the epoch goes back to 1


@dataclass
class Session:
    """What one broker holds of this client's fetch: its session id, the next epoch, each partition's fetch.

    aiokafka sends a broker one fetch at a time, so the session is used by one fetch at a time.
    A session given up is named by the whole fetch that follows, which closes it on the broker:
    its cache holds a thousand sessions by default.
    """

    id: int = NO_SESSION
    epoch: int = FULL
    held: Wanted = field(default_factory=dict)
    busy: bool = False

    def request(self, fetch: FetchRequest) -> tuple[SessionFetch, Wanted]:
        """The fetch to send in place of aiokafka's `fetch`, and what the broker holds once it answers."""
        wanted: Wanted = {
            (topic, partition): (offset, max_bytes)
            for topic, partitions in fetch.topics
            for partition, offset, max_bytes in partitions
        }
        if self.epoch == FULL:
            return SessionFetch(fetch, self.id, FULL, fetch.topics, []), wanted
        # A partition the broker holds at the same offset is left out; it fetches it all the same.
        held = self.held.get
        changed = [
            (topic, moved)
            for topic, partitions in fetch.topics
            if (moved := [p for p in partitions if held((topic, p[0])) != (p[1], p[2])])
        ]
        gone = [tp for tp in self.held if tp not in wanted]  # paused, or records still held by aiokafka
        return SessionFetch(fetch, self.id, self.epoch, changed, _forgotten(gone)), wanted

    def answered(self, response: Any, wanted: Wanted) -> None:
        """Take the broker's answer: a session made or continued, or dropped (the next fetch names everything)."""
        if response.API_VERSION >= SESSIONS_FROM and response.error_code:
            # Session errors (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH) come with no
            # partitions and no session id: start over, closing the session named.
            self.reset()
            return
        if response.API_VERSION < SESSIONS_FROM or response.session_id == NO_SESSION:
            # A broker without sessions, or whose session cache is full, made none: none to close.
            self.id = NO_SESSION
            self.reset()
            return
        self.epoch = 1 if self.epoch in (FULL, LAST_EPOCH) else self.epoch + 1
        self.id = response.session_id
        self.held = wanted

    def reset(self) -> None:
        """Give the session up: the next fetch names every partition, closes the old session, asks for a new one."""
        self.epoch, self.held = FULL, {}


class SessionFetch(FetchRequest):  # type: ignore[misc]  # aiokafka is untyped to mypy here
    """aiokafka's fetch within a session: it encodes the `changed` partitions and the `forgotten`.

    `topics` stays the whole fetch, as aiokafka reads each answered partition's fetch offset
    from it; the broker answers only partitions it holds, which are those.
    """

    def __init__(
        self, fetch: FetchRequest, session_id: int, epoch: int, changed: Topics, forgotten: list[tuple[str, list[int]]]
    ) -> None:
        super().__init__(
            fetch._max_wait_ms,
            fetch._min_bytes,
            fetch._max_bytes,
            fetch._isolation_level,
            changed,
            rack_id=fetch._rack_id,
        )
        self._fetch = fetch
        self._session = (session_id, epoch, forgotten)

    @property
    def topics(self) -> Topics:
        topics: Topics = self._fetch.topics
        return topics

    def build(self, request_struct_class: type[FetchRequestStruct]) -> FetchRequestStruct:
        if request_struct_class.API_VERSION < SESSIONS_FROM:  # no sessions: the whole fetch, as aiokafka's
            return self._fetch.build(request_struct_class)
        struct = super().build(request_struct_class)
        session_id, epoch, forgotten = self._session
        struct.session_id, struct.session_epoch, struct.forgotten_topics_data = session_id, epoch, forgotten
        return struct


class FetchSessions:
    """A client's `send` with each broker's fetches in a session of their own.

    aiokafka sends every assigned partition in every fetch and gets every one back, which costs
    the client and the broker per partition, per fetch: a worker reading 41 partitions fetches
    some 350 times a second at 1,000 events/s. In a session the broker remembers the partitions
    and their offsets, a fetch names only those that changed, and its answer only those with
    news. Every other request passes through unchanged.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._sessions: dict[int, Session] = {}

    def session(self, node_id: int) -> Session:
        return self._sessions.setdefault(node_id, Session())

    async def __call__(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        session = self.session(node_id)
        if type(request) is not FetchRequest or session.busy:  # a second fetch at once goes without the session
            return await self._send(node_id, request, **kwargs)
        fetch, wanted = session.request(request)
        session.busy = True
        try:
            response = await self._send(node_id, fetch, **kwargs)
        except BaseException:  # unanswered, or cancelled: the broker may have moved the epoch on
            session.reset()
            raise
        finally:
            session.busy = False
        session.answered(response, wanted)
        return response


def attach(consumer: AIOKafkaConsumer) -> FetchSessions:
    """Put fetch sessions into an aiokafka consumer's client `send`, which its fetcher calls; before it starts."""
    client = consumer._client
    sessions = FetchSessions(client.send)
    client.send = sessions
    return sessions


def _forgotten(partitions: list[Partition]) -> list[tuple[str, list[int]]]:
    topics: dict[str, list[int]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(partition)
    return list(topics.items())
