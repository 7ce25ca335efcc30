"""A fresh Kafka topic per test: tests share the session's broker, never a topic."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """Create `<prefix>-<random>` with `partitions` partitions; its name."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic
