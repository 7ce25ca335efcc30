"""Event-time windowed tables for analysts: pure specs, windows, aggregates, row keys and queries."""
