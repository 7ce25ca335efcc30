"""Delivery to subscribers: subscriptions, cursors, signatures, backoff (pure); store, streams, webhooks (Kafka)."""
