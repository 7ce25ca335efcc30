"""Kafka plumbing: the local broker launcher, topic names and creation, batched sends."""
