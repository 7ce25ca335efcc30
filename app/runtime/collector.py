"""Python's garbage collector tuned for latency: what start-up built is frozen out of collections."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

# A young generation ten times CPython's 700 allocations: per event both processes allocate
# hundreds of short-lived objects, and most die before a collection would look at them.
YOUNG_THRESHOLD = 7000


def settle() -> None:
    """Collect once, then freeze every object alive now, which later collections skip.

    A full collection walks every object the process holds, and faust, aiokafka and aiohttp
    hold hundreds of thousands: 40 to 55 ms each in the worker, several a second under load,
    which showed as the p99 of bench pipeline. Call it once the process has started serving.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    log.info("garbage collector: %d start-up objects frozen out of collections", gc.get_freeze_count())
