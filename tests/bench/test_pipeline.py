"""The pipeline bench's steady load: single orders, or batches of usage events above what single POSTs reach."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from aiohttp import web

from app.avro.schemas import SchemaSet
from bench.common import EffectsReader, Http, order_records, share
from bench.pipeline import Load, broker_process, compiler_cpu_s, cpu_pressure_s, drive_steady, run_queue_s


def test_single_orders_up_to_what_one_process_posts_and_small_usage_batches_above() -> None:
    assert (Load(1000).batch, Load(1000).topic) == (1, "orders")
    assert "POST /topics/orders/events" in Load(1000).describe()
    assert (Load(10_000).batch, Load(10_000).topic) == (10, "usage")
    assert Load(10_000).describe() == "batches of 10 usage events, PUT /events, 1,000 requests/s"


@asynccontextmanager
async def usage_endpoint(bodies: list[dict[str, list[dict[str, str]]]]) -> AsyncIterator[str]:
    async def put_events(request: web.Request) -> web.Response:
        bodies.append(orjson.loads(await request.read()))
        return web.json_response({"invalidEvents": []})

    app = web.Application()
    app.router.add_put("/events", put_events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_batched_load_sends_every_event_once_each_due_with_its_request() -> None:
    bodies: list[dict[str, list[dict[str, str]]]] = []
    async with usage_endpoint(bodies) as url, Http(url, connections=4) as http:
        steady = await drive_steady(http, Load(4000), 0.02, "t")
    refs = [event["ref"] for body in bodies for event in body["events"]]
    assert len(bodies) == 20 and all(len(body["events"]) == 4 for body in bodies)
    assert sorted(refs) == sorted(steady.sent) and len(set(refs)) == 80
    assert steady.failures == [] and len(steady.response_s) == 20
    # The four events of a request are due when it is: 1 ms apart at 4,000 events/s.
    assert steady.sent["t_0_0"] == steady.sent["t_0_3"]
    assert abs(steady.sent["t_1_0"] - steady.sent["t_0_0"] - 0.001) < 1e-9


async def test_the_event_reader_reads_each_events_id_from_its_record() -> None:
    schemas = SchemaSet.load(Path("schemas"))
    records, _ = order_records(schemas["event"], 3)
    reader = EffectsReader("127.0.0.1:1", "events", 1, schemas, schema="event")
    ids = [reader._event_id(value) for _, value in records]
    assert ids == [str(schemas["event"].decode(value)["id"]) for _, value in records]


def test_cpu_waits_are_read_from_proc_and_unknown_without_it(tmp_path: Path) -> None:
    pressure = tmp_path / "cpu"
    pressure.write_text("some avg10=2.67 avg60=27.32 avg300=50.92 total=4049441308\nfull avg10=0.00 total=0\n")
    assert cpu_pressure_s(pressure) == 4049.441308
    assert cpu_pressure_s(tmp_path / "missing") is None
    schedstat = tmp_path / "schedstat"
    schedstat.write_text("81000000000 2500000000 9000\n")  # on CPU, waiting on a run queue (ns), timeslices
    assert run_queue_s(schedstat) == 2.5
    assert share(2.5, 3.0, 2.0) == "25%" and share(None, 3.0, 2.0) == "-"


def thread(process: Path, tid: int, name: str, seconds: int) -> None:
    task = process / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(f"{name}\n")
    ticks = os.sysconf("SC_CLK_TCK") * seconds
    (task / "stat").write_text(f"{tid} ({name}) S 1 2 3 0 -1 4194560 9 0 0 0 {ticks} 0 0 0 20 0 3 0 1\n")


def test_the_jit_compiler_time_is_that_of_the_c1_and_c2_threads_alone(tmp_path: Path) -> None:
    jvm = tmp_path / "4242"
    thread(jvm, 4243, "C2 CompilerThre", 7)
    thread(jvm, 4244, "C1 CompilerThre", 2)
    thread(jvm, 4245, "data-plane-kafka", 30)
    assert compiler_cpu_s(jvm) == 9.0
    assert compiler_cpu_s(tmp_path / "gone") is None


def test_the_bench_broker_is_the_jvm_whose_command_names_the_bench_folder(tmp_path: Path) -> None:
    proc, workdir = tmp_path / "proc", tmp_path / "sluice-bench-x1"
    for pid, command in (
        ("10", b"python\0-m\0bench"),
        ("11", b"java\0-cp\0libs\0kafka.Kafka\0/elsewhere/server.properties"),
        ("12", b"java\0-cp\0libs\0kafka.Kafka\0" + str(workdir / "kafka" / "server.properties").encode()),
    ):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(command)
    assert broker_process(workdir, proc) == proc / "12"
    assert broker_process(tmp_path / "other", proc) is None
