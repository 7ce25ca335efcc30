"""Benchmarks of Sluice on a real stack in a fresh namespace (`python -m bench`); not part of the package."""
