"""The HTTP edge: producers publish events here; they land durably in Kafka."""
