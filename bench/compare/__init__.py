"""Sluice's worker against Quix Streams on the same job, side by side (`python -m bench compare`)."""
