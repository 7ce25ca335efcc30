"""The command line: `python -m bench ingest|pipeline|delivery|analytics|tenants|compare [options]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.cli.main import command
from app.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks on a real stack in a fresh namespace. Settings come from SLUICE_* variables.",
    )
    parser.add_argument("what", choices=["ingest", "pipeline", "delivery", "analytics", "tenants", "compare"])
    parser.add_argument(
        "--events", type=int, default=100_000, help="events per endpoint; pipeline, compare: pre-loaded events"
    )
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--endpoints", default="usage,analytics,segment", help="usage, analytics, segment")
    parser.add_argument("--rate", type=float, default=1000, help="tenants: tenant B's steady events/s")
    parser.add_argument(
        "--rates", default="1000,10000", help="pipeline: steady events/s of the latency phases, comma-separated"
    )
    parser.add_argument(
        "--seconds", type=float, default=20, help="pipeline: length of the latency phase; tenants: of a phase"
    )
    parser.add_argument("--rounds", type=int, default=3, help="tenants: rounds of the two phases, alternating")
    parser.add_argument("--runs", type=int, default=3, help="compare: runs of each side, alternating")
    parser.add_argument("--subscribers", type=int, default=10, help="delivery: concurrent SSE streams")
    parser.add_argument("--windows", type=int, default=1_000_000, help="analytics: windows of the queried table")
    parser.add_argument("--queries", type=int, default=500, help="analytics: queries of each kind")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return command(f"bench {args.what}", lambda settings: _run(args, settings))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Imports are per benchmark: each loads only what it drives.
    if args.what == "compare":
        from bench.compare import runner

        return asyncio.run(runner.run(settings, args.events, args.runs))
    if args.what == "tenants":
        from bench import tenants

        return asyncio.run(tenants.run(settings, args.seconds, args.rounds, args.rate))
    if args.what == "delivery":
        from bench import delivery

        return asyncio.run(delivery.run(settings, args.events, args.subscribers))
    if args.what == "analytics":
        from bench import analytics

        return asyncio.run(analytics.run(settings, args.events, args.windows, args.queries))
    if args.what == "pipeline":
        from bench import pipeline

        rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
        return asyncio.run(pipeline.run(settings, args.events, rates, args.seconds))
    from bench import ingest

    endpoints = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    return asyncio.run(ingest.run(settings, args.events, args.batch, args.connections, endpoints))


if __name__ == "__main__":
    sys.exit(main())
