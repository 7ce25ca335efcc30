"""The `sluice` command and what only it runs: process supervision, tail, query."""

from app.cli.main import main

__all__ = ["main"]
