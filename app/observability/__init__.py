"""Metrics (Prometheus) and trace context (W3C, OpenTelemetry) of the producer, the worker and the dispatcher."""
