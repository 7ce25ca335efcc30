"""The `sluice` command: up, kafka, producer, worker, deliver, replay, tail, query, dlq, simulate, hash-key."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.errors import SluiceError, ValidationError
from app.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Sluice: an event pipeline on Apache Kafka. Settings come from SLUICE_* variables."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="run a local Kafka (unless KAFKA_BOOTSTRAP_SERVERS), a producer and a worker")
    kafka = commands.add_parser("kafka", help="run a local Apache Kafka broker (KRaft) in the foreground")
    kafka.add_argument("--port", type=int, help="listener port (SLUICE_KAFKA_PORT, default 9092)")
    kafka.add_argument("--data-dir", type=Path, help="log dir, reused across starts (SLUICE_KAFKA_DATA_DIR)")
    kafka.add_argument("--fetch-only", action="store_true", help="fetch and cache the jars, then exit")
    kafka.add_argument("--nodes", type=int, default=1, help="KRaft nodes, on consecutive ports (default 1)")
    producer = commands.add_parser("producer", help="run the HTTP producer")
    producer.add_argument("--port", type=int, help="HTTP port (SLUICE_PRODUCER_PORT, default 8080)")
    producer.add_argument("--processes", type=int, help="processes sharing the port (SLUICE_PRODUCER_PROCESSES)")
    producer.add_argument("--serve-one", action="store_true", help=argparse.SUPPRESS)
    worker = commands.add_parser("worker", help="run a Faust worker")
    worker.add_argument("--port", type=int, help="web port (SLUICE_WORKER_PORT, default 6066)")
    commands.add_parser("deliver", help="push matching records to webhook subscriptions")
    replay = commands.add_parser("replay", help="send a webhook subscription's parked deliveries again")
    replay.add_argument("tenant")
    replay.add_argument("subscription", help="subscription name")
    tail = commands.add_parser("tail", help="print decoded records of a stream as JSON lines")
    tail.add_argument("stream", help="'effects', 'dlq.<tenant>', 'dlq' (the worker's) or a topic slug")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--max", type=int, help="exit after this many records")
    tail.add_argument("--timeout", type=float, help="exit after this many seconds without a record")
    query = commands.add_parser("query", help="query a windowed table through the producer's HTTP API")
    query.add_argument("table", help="table name (GET /tables lists them)")
    query.add_argument("--key", help="group key: the value, or a JSON array with several group_by fields")
    query.add_argument("--from", dest="start", help="ISO 8601 time or epoch ms: windows ending after it")
    query.add_argument("--to", dest="end", help="ISO 8601 time or epoch ms: windows starting before it")
    query.add_argument("--top", type=int, help="the N keys of highest value in one window (--window, default now)")
    query.add_argument("--window", help="with --top: a time in the window (ISO 8601 or epoch ms)")
    query.add_argument("--format", choices=["table", "json", "csv"], default="table")
    query.add_argument("--url", help="producer URL (default http://SLUICE_PRODUCER_HOST:SLUICE_PRODUCER_PORT)")
    query.add_argument("--api-key", help="API key (default: the first of SLUICE_API_KEYS)")
    _dlq_parser(commands)
    simulate = commands.add_parser("simulate", help="run events through a topic's rules; writes nothing")
    simulate.add_argument("topic", help="topic slug")
    simulate.add_argument("events", type=Path, help='JSON file of [{"type", "data", "occurred_at"}, ...]; - for stdin')
    simulate.add_argument("--state", type=Path, help="JSON file of a starting user state (as the output's 'state')")
    hash_key = commands.add_parser("hash-key", help="print the SHA-256 of an API key, for SLUICE_KEYS_FILE")
    hash_key.add_argument("key")
    return parser


def _dlq_parser(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="list or replay the tenant's refused input through the producer's HTTP API")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print the refused requests and events as JSON lines, oldest first")
    replay = actions.add_parser("replay", help="send refused requests through their routes again, patched")
    for action in (listing, replay):
        action.add_argument("--reason", help="error code, or a dotted prefix of it (validation matches validation.*)")
        action.add_argument("--from", dest="start", help="RFC 3339 time: received at or after it")
        action.add_argument("--to", dest="end", help="RFC 3339 time: received at or before it")
        action.add_argument("--url", help="producer URL (default http://SLUICE_PRODUCER_HOST:SLUICE_PRODUCER_PORT)")
        action.add_argument("--key", help="API key (default SLUICE_API_KEY, else the first of SLUICE_API_KEYS)")
    listing.add_argument("--limit", type=int, help="print at most this many (default: all)")
    listing.add_argument("--newest", action="store_true", help="newest first")
    replay.add_argument("--id", dest="ids", action="append", help="a dead letter id, <partition>:<offset>; repeat")
    replay.add_argument("--patch", help="JSON Merge Patch (RFC 7396) for each body (or each event of a batch); @file")
    replay.add_argument("--dry-run", action="store_true", help="validate and count, publish nothing")


def _read_json(path: Path) -> Any:
    import orjson

    from app.errors import MalformedBody

    try:
        return orjson.loads(sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise MalformedBody(f"{path}: {exc}", field=str(path)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return command(f"sluice {args.command}", lambda settings: _run(args, settings))


def command(name: str, run: Callable[[Settings], int]) -> int:
    """Run a command with the settings from the environment and logging set up; its exit code.

    A refusal (bad settings, a bad argument) prints one line naming it and exits 2.
    """
    try:
        settings = Settings.from_env()
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if settings.log_level != "debug":
            # aiokafka narrates every group join and metadata change at INFO.
            logging.getLogger("aiokafka").setLevel(logging.WARNING)
        return run(settings)
    except SluiceError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Imports are per command: `sluice kafka` must not need Faust, nor the producer RocksDB.
    if args.command == "up":
        from app.cli.supervisor import up

        return asyncio.run(up(settings))
    if args.command == "kafka":
        from app.kafka import launcher

        if args.port:
            settings = settings.replace("kafka", port=args.port)
        if args.data_dir:
            settings = settings.replace("kafka", data_dir=args.data_dir)
        if args.fetch_only:
            print(launcher.ensure_jars(settings.kafka.home))
            return 0
        return launcher.serve(settings, nodes=args.nodes)
    if args.command == "producer":
        from app.cli.supervisor import producers
        from app.producer.app import serve

        if args.port:
            settings = settings.replace("producer", port=args.port)
        if args.processes:
            settings = settings.replace("producer", processes=args.processes)
        if settings.producer.processes > 1 and not args.serve_one:
            return asyncio.run(producers(settings))
        asyncio.run(serve(settings))
        return 0
    if args.command == "worker":
        from app.worker.main import run

        if args.port:
            settings = settings.replace("worker", port=args.port)
        return run(settings)
    if args.command == "deliver":
        from app.delivery.dispatcher import run as deliver

        return asyncio.run(deliver(settings))
    if args.command == "replay":
        from app.delivery.dispatcher import replay_command

        return asyncio.run(replay_command(settings, args.tenant, args.subscription))
    if args.command == "tail":
        from app.cli.tail import tail

        return asyncio.run(tail(settings, args.stream, args.from_beginning, args.max, args.timeout))
    if args.command == "query":
        from app.cli.query import Query, query

        request = Query(args.table, args.key, args.start, args.end, args.top, args.window, args.format)
        return asyncio.run(query(settings, request, args.url, args.api_key))
    if args.command == "dlq":
        from app.cli.dlq import Filter, list_letters, patch_of, replay

        chosen = Filter(args.reason, args.start, args.end, tuple(getattr(args, "ids", None) or ()))
        if args.action == "list":
            if args.limit is not None and args.limit < 1:
                raise ValidationError("--limit: must be at least 1", field="--limit")
            return asyncio.run(
                list_letters(settings, chosen, limit=args.limit, newest=args.newest, url=args.url, key=args.key)
            )
        patch = patch_of(args.patch)
        return asyncio.run(replay(settings, chosen, patch=patch, dry_run=args.dry_run, url=args.url, key=args.key))
    if args.command == "simulate":
        import orjson

        from app.core.envelope import utcnow
        from app.deployment import Deployment
        from app.simulation import simulate

        body = {"topic": args.topic, "events": _read_json(args.events)}
        if args.state is not None:
            body["state"] = _read_json(args.state)
        result = simulate(body, Deployment.load(settings).catalog, utcnow())
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.command == "hash-key":
        from app.core.tenants import hash_key

        print(hash_key(args.key))
        return 0
    raise AssertionError(args.command)
