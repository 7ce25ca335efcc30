"""Wire formats producers send: each module parses, validates and maps onto the envelope; pure."""
