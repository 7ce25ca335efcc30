"""Waiting in a test for a condition, with a deadline instead of a sleep that hopes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(done: Callable[[], bool], *, timeout: float, what: str, every: float = 0.05) -> None:
    """Poll `done` every `every` seconds until it holds; fail naming `what` if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} (waited {timeout:g} s)"
        await asyncio.sleep(every)
