"""The records of some topics, handed from the fetch loop straight to the one reader of them."""

from __future__ import annotations

import asyncio
from collections import deque

from faust.types import TP, Message


class Inbox:
    """The records of some topics, handed from the fetch loop straight to the one reader of them.

    faust hands each record to its conductor, which makes an event of it and puts it on the
    agent's channel queue, with flow-control and pressure checks per record: a tenth of the
    worker's time. An Intake (app/worker/intake.py) takes the records as fetched instead, a
    partition's run of a fetch at a time: the records are kept in those runs, not one by one.
    The fetch loop waits while the inbox holds `capacity` records, until half are taken.
    """

    def __init__(self, capacity: int) -> None:
        self._runs: deque[list[Message]] = deque()  # each of one partition, in offset order
        self._count = 0
        self._last: dict[TP, tuple[int | None, int]] = {}  # (generation, offset) of the last record put, per partition
        self._capacity = capacity
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        """The records put and not yet taken."""
        return self._count

    def put_many(self, tp: TP, messages: list[Message]) -> bool:
        """Keep these records of `tp`, in offset order; False if the inbox is full now, and the fetch
        loop should wait for `room`."""
        if self._closed or not messages:
            return True  # its reader is gone; its successor starts from the committed offsets
        self._runs.append(messages)
        self._count += len(messages)
        last = messages[-1]
        self._last[tp] = (last.generation_id, last.offset)
        self._arrived.set()
        if self._count >= self._capacity:
            self._room.clear()
            return False
        return True

    def last_put(self, tp: TP, generation: int | None) -> int | None:
        """The offset of the last record of `tp` put here in `generation` since the last `forget`."""
        last = self._last.get(tp)
        return last[1] if last is not None and last[0] == generation else None

    def forget(self, tp: TP) -> None:
        """`tp` was sought: what was put before says nothing of what the fetch loop reads next."""
        self._last.pop(tp, None)

    async def room(self) -> None:
        await self._room.wait()

    async def take_runs(self, most: int) -> list[list[Message]]:
        """At least one record, at most `most`, in the order fetched, in runs of one partition each
        (each in offset order); waits for the first."""
        while not self._count:
            self._arrived.clear()
            await self._arrived.wait()
        return self.take_runs_nowait(most)

    def take_runs_nowait(self, most: int) -> list[list[Message]]:
        runs = self._runs
        taken: list[list[Message]] = []
        wanted = most
        while runs and wanted > 0:
            run = runs[0]
            if len(run) <= wanted:
                taken.append(runs.popleft())
            else:
                taken.append(run[:wanted])
                runs[0] = run[wanted:]
            wanted -= len(taken[-1])
        self._count -= most - wanted
        if self._count <= self._capacity // 2:
            self._room.set()
        return taken

    def close(self) -> None:
        """Its reader stops: the fetch loop must not wait for it to make room."""
        self._closed = True
        self._runs.clear()
        self._count = 0
        self._room.set()
