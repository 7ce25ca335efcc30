"""faust's aiokafka transport with the consumer's fetch wait set by Sluice, not fixed at 1.5 s."""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TransportT


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts, which is after this; faust passes no setting through.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose consumer waits at most `fetch_max_wait_ms` for a fetch.

    aiokafka sends a node no new fetch while one is in flight, and leaves out of a fetch the
    partitions whose records it still holds. A fetch of only quiet partitions then waits the
    whole fetch wait, and every busy partition behind it waits too: with faust's 1.5 s, a
    steady 1,000 events/s settled into a backlog of 1.2 to 1.6 s that never drained (issue 4).
    """

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)
