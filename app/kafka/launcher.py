"""Real Apache Kafka without Docker: jars from Maven Central, KRaft nodes (one, or a small cluster) run by `java`."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.errors import KafkaLocalError
from app.settings import Settings

KAFKA_VERSION = "4.0.1"
LOG4J_VERSION = "2.24.3"
# Maven 3.8 resolves an old dependency plugin that cannot copy these; name a recent one.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MARKER = ".complete"

JAVA_MISSING = (
    "Java 17 or newer is required to run Kafka: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
)
MAVEN_MISSING = (
    "Maven is required to fetch Kafka from Maven Central: install Maven 3.8+ (Debian: apt-get install maven)"
)

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>sluice</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka logs through SLF4J and ships no binding: -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

# WARN and up, plus the one INFO line that says the broker is up ("Kafka Server started").
LOG4J = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

# Short-lived tools (format) start about twice as fast without the optimising JIT.
QUICK_JIT = "-XX:TieredStopAtLevel=1"
TOOL_JVM = [QUICK_JIT, "-XX:+UseSerialGC"]


def _root(home: Path) -> Path:
    return home.expanduser().resolve() / f"kafka-{KAFKA_VERSION}"


def ensure_jars(home: Path) -> Path:
    """Return the folder of Kafka's jars, fetching them with Maven the first time only."""
    root = _root(home)
    libs = root / "libs"
    if (root / MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLocalError(MAVEN_MISSING)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if (root / MARKER).exists():  # another process fetched them while we waited for the lock
            return libs
        shutil.rmtree(libs, ignore_errors=True)  # a half-finished earlier fetch
        (root / "pom.xml").write_text(POM)
        print(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {root} ...", file=sys.stderr, flush=True)
        command = [mvn, "-q", "-B", f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime"]
        done = subprocess.run(
            [*command, f"-DoutputDirectory={libs}"], cwd=root, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            output = _tail(done.stdout + done.stderr)
            raise KafkaLocalError(f"Maven could not fetch Kafka {KAFKA_VERSION} (exit {done.returncode}):\n{output}")
        (root / MARKER).write_text(KAFKA_VERSION + "\n")
    return libs


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Parallel test workers or `sluice up` next to a test run must not fetch into the same folder at once.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _write_if_changed(path: Path, text: str) -> None:
    # Several brokers share the jar cache; an atomic replace never shows one of them half a file.
    if path.exists() and path.read_text() == text:
        return
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text)
    scratch.replace(path)


def _java() -> str:
    """The `java` to run (JAVA_HOME first, as Kafka's own scripts do); Kafka 4 needs Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate is not None and os.access(candidate, os.X_OK) else shutil.which("java")
    if java is None:
        raise KafkaLocalError(JAVA_MISSING)
    try:
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        raise KafkaLocalError(JAVA_MISSING) from None
    # `java -version` writes to stderr: 'openjdk version "17.0.15"', '"21"', or '"1.8.0_392"' before Java 9.
    found = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if found is None:
        raise KafkaLocalError(JAVA_MISSING)
    major = int(found.group(1))
    if major == 1 and found.group(2):
        major = int(found.group(2))
    if major < 17:
        raise KafkaLocalError(f"{JAVA_MISSING}; found Java {major} at {java}")
    return java


def _cluster_id() -> str:
    # What `kafka-storage random-uuid` prints (Kafka's Uuid: url-safe base64, no padding, never
    # starting with '-'), without paying a JVM start for it.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def thread_pools(cores: int) -> tuple[int, int]:
    """The broker's network and request-handler (I/O) threads for a machine of `cores`: Kafka's 3 and 8
    from 8 cores up, fewer below.

    Each request passes from a network thread to a handler thread and back; on a small machine
    that Sluice's processes share with the broker, eleven such threads only take turns. On 2
    cores, 1 and 2 of them lowered the broker's CPU at 1,000 events/s from 36-37% to 33-34% of a
    core and the pipeline's p99 from 14-23 ms to 11-13 ms (docs/performance.md).
    """
    return min(3, max(1, cores // 2)), min(8, max(2, cores))


async def wait_for_kafka(bootstrap: str, timeout: float = 60.0) -> None:
    """Return once the broker at `bootstrap` answers a metadata request; KafkaLocalError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with _quiet_connect_errors():
        while (left := deadline - time.monotonic()) > 0:
            try:
                if await asyncio.wait_for(_answers(bootstrap), left):
                    return
            except TimeoutError:
                break
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    raise KafkaLocalError(f"Kafka at {bootstrap} did not answer within {timeout:g}s")


async def _answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _quiet_connect_errors() -> Iterator[None]:
    # A refused connection while the JVM boots is expected, not an ERROR line every 250 ms.
    # A filter (not a level) so that overlapping waits each remove exactly what they added;
    # a logger's filter sees only its own records, and aiokafka's client logs as plain "aiokafka".
    loggers = [logging.getLogger(name) for name in ("aiokafka", "aiokafka.conn")]
    drop = _DropAll()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


if sys.platform == "linux":
    # Resolved here, in the parent: loading a library between fork and exec can deadlock.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl

    def _die_with_parent() -> None:
        # Runs in the child before exec: a broker must not outlive a `sluice kafka` or a pytest
        # run that was SIGKILLed. 1 is PR_SET_PDEATHSIG.
        _prctl(1, signal.SIGTERM)

    _PREEXEC: Callable[[], None] | None = _die_with_parent
else:
    _PREEXEC = None


class LocalBroker:
    """One KRaft node (broker and controller in one JVM) on 127.0.0.1: a single-node cluster by default.

    With `voters` (node id -> controller port of every node) it is one node of a cluster whose
    quorum is those voters; every node of one cluster is formatted with the same `cluster_id`.
    On Linux the JVM gets SIGTERM when the thread that called start() ends, so call it from a
    thread that lives as long as the broker should (the main thread, or the event loop's).
    """

    def __init__(
        self,
        *,
        home: Path,
        data_dir: Path,
        port: int,
        controller_port: int,
        heap: str = "512m",
        log_file: Path | None = None,
        jvm_options: Sequence[str] = (),
        node_id: int = 1,
        voters: Mapping[int, int] | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.home = home.expanduser().resolve()
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.log_file = None if log_file is None else log_file.expanduser().resolve()
        self.jvm_options = tuple(jvm_options)  # after Sluice's own, so they win
        self.node_id = node_id
        self.voters = dict(voters) if voters is not None else {node_id: controller_port}
        self.cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _log_dir(self) -> Path:
        # Data dirs made before log.dirs was the data dir itself kept their logs in `logs/`;
        # formatting the parent instead would hide that data and fail on the unknown sub-folder.
        legacy = self.data_dir / "logs"
        if not (self.data_dir / "meta.properties").exists() and (legacy / "meta.properties").exists():
            return legacy
        return self.data_dir

    def poll(self) -> int | None:
        """The JVM's exit code once it has exited, else None; KafkaLocalError if it was never started."""
        if self._process is None:
            raise KafkaLocalError("the broker was not started")
        return self._process.poll()

    def _properties(self) -> str:
        ctrl = self.controller_port
        voters = ",".join(f"{node}@127.0.0.1:{port}" for node, port in sorted(self.voters.items()))
        # Kafka's own topics (consumer offsets, transactions) as replicated as the cluster allows:
        # three copies with two in sync, as Sluice's topics get, or every node if there are fewer.
        copies = min(3, len(self.voters))
        in_sync = max(1, copies - 1)
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctrl}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self._log_dir}",
            "num.partitions=1",
            f"offsets.topic.replication.factor={copies}",
            f"transaction.state.log.replication.factor={copies}",
            f"transaction.state.log.min.isr={in_sync}",
            f"share.coordinator.state.topic.replication.factor={copies}",
            f"share.coordinator.state.topic.min.isr={in_sync}",
            "group.initial.rebalance.delay.ms=0",
            # On a restart the controller keeps the previous broker registration until its session
            # times out (default 9 s) before the new one may register; heartbeats stay 6x as frequent.
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=3000",
            # Sluice creates its topics with the partition count it needs; a typo must not make one.
            "auto.create.topics.enable=false",
        ]
        network, io = thread_pools(os.cpu_count() or 1)
        lines += [f"num.network.threads={network}", f"num.io.threads={io}"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Fetch the jars if needed, format a new data dir, and spawn the JVM; does not wait for it."""
        if self._process is not None and self._process.poll() is None:
            raise KafkaLocalError(f"the broker on {self.bootstrap} is already running")
        java, common, config = self._prepare()
        out: IO[bytes] | None = None if self.log_file is None else self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                [java, *self._jvm_options(), *common, "kafka.Kafka", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_PREEXEC,
            )
        finally:
            if out is not None:
                out.close()  # the JVM holds its own copy of the descriptor

    def format(self) -> None:
        """Format the data dir if it is new, as start() would; unlike start(), from any thread."""
        self._prepare()

    def _prepare(self) -> tuple[str, list[str], Path]:
        """The `java` to run, its class path and logging options, and the config file; formats a new data dir."""
        libs = ensure_jars(self.home)
        java = _java()
        log4j = _root(self.home) / "log4j2.properties"
        _write_if_changed(log4j, LOG4J)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Written on every start: the ports may differ from the last one, the data stays.
        config = self.data_dir / "server.properties"
        config.write_text(self._properties())
        common = ["-cp", str(libs / "*"), f"-Dlog4j2.configurationFile={log4j}"]
        if not (self._log_dir / "meta.properties").exists():
            self._format(java, common, config)
        return java, common, config

    def _format(self, java: str, common: list[str], config: Path) -> None:
        cluster_id = self.cluster_id or _cluster_id()
        done = subprocess.run(
            [java, *TOOL_JVM, *common, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise KafkaLocalError(f"formatting {self._log_dir} failed:\n{_tail(done.stdout + done.stderr)}")

    def _jvm_options(self) -> list[str]:
        return [f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", *self.jvm_options]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the broker answers a metadata request; KafkaLocalError if it exits or times out first."""
        ready = asyncio.ensure_future(wait_for_kafka(self.bootstrap, timeout))
        try:
            while not ready.done():
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise KafkaLocalError(f"Kafka exited while starting (exit {code}){self._log_tail()}")
                await asyncio.wait({ready}, timeout=0.2)
            ready.result()
        finally:
            ready.cancel()

    def _log_tail(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return f"; {self.log_file} ends:\n" + _tail(self.log_file.read_text(errors="replace"))

    def wait(self) -> int:
        """Block until the JVM exits; return its exit code."""
        if self._process is None:
            raise KafkaLocalError("the broker was not started")
        return self._process.wait()

    def _terminate(self) -> None:
        # Only a signal, no waiting: safe inside a signal handler that interrupted Popen.wait().
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def kill(self) -> None:
        """SIGKILL: a crash, with no controlled shutdown; does nothing if not running."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after `timeout` seconds; does nothing if not running."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalCluster:
    """KRaft nodes on 127.0.0.1, each broker and controller, the voters of one static quorum.

    Node n (from 1) listens on `ports[n - 1]` and `controller_ports[n - 1]` and keeps its data in
    `data_dir/node-<n>`; its output goes to `log_dir/node-<n>.log` when `log_dir` is given.
    Call start() from a long-lived thread, as for LocalBroker.
    """

    def __init__(
        self,
        *,
        home: Path,
        data_dir: Path,
        ports: Sequence[int],
        controller_ports: Sequence[int],
        heap: str = "512m",
        log_dir: Path | None = None,
        jvm_options: Sequence[str] = (),
    ) -> None:
        if len(ports) != len(controller_ports) or not ports:
            raise KafkaLocalError("a local cluster needs one broker port and one controller port per node")
        self.data_dir = data_dir.expanduser().resolve()
        voters = {node: port for node, port in enumerate(controller_ports, 1)}
        dirs = [self.data_dir / f"node-{node}" for node in voters]
        # One cluster id for all: a node formatted with another one would never join the others.
        cluster_id = next((found for found in map(_formatted_cluster_id, dirs) if found), None) or _cluster_id()
        self.nodes = [
            LocalBroker(
                home=home,
                data_dir=folder,
                port=port,
                controller_port=controller_port,
                heap=heap,
                log_file=None if log_dir is None else log_dir / f"node-{node}.log",
                jvm_options=jvm_options,
                node_id=node,
                voters=voters,
                cluster_id=cluster_id,
            )
            for (node, controller_port), port, folder in zip(voters.items(), ports, dirs, strict=True)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self) -> None:
        """Format new data dirs (side by side: each is a JVM start) and spawn every node's JVM; does not wait."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(LocalBroker.format, self.nodes))
        for node in self.nodes:
            node.start()

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once every node answers and the cluster lists all of them as brokers."""
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(node.wait_ready(timeout) for node in self.nodes))
        await wait_for_brokers(self.bootstrap, len(self.nodes), max(1.0, deadline - time.monotonic()))

    def wait(self) -> int:
        """Block until a node's JVM exits; return its exit code."""
        while True:
            for node in self.nodes:
                code = node.poll()
                if code is not None:
                    return code
            time.sleep(0.2)

    def _terminate(self) -> None:
        for node in self.nodes:
            node._terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once, then wait for each (SIGKILL after `timeout` seconds)."""
        self._terminate()
        for node in self.nodes:
            node.stop(timeout)


def _formatted_cluster_id(data_dir: Path) -> str | None:
    meta = data_dir / "meta.properties"
    if not meta.exists():
        return None
    found = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.MULTILINE)
    return found.group(1) if found else None


async def wait_for_brokers(bootstrap: str, count: int, timeout: float = 60.0) -> None:
    """Return once the cluster at `bootstrap` lists `count` brokers; KafkaLocalError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with _quiet_connect_errors():
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                if len((await admin.describe_cluster())["brokers"]) >= count:
                    return
            except (KafkaError, OSError):
                pass
            finally:
                await admin.close()
            await asyncio.sleep(0.25)
    raise KafkaLocalError(f"Kafka at {bootstrap} did not list {count} brokers within {timeout:g}s")


def local_kafka(settings: Settings, nodes: int = 1) -> LocalBroker | LocalCluster:
    """What `sluice kafka [--nodes N]` runs: one node on the settings' ports, or N nodes on consecutive ones.

    N nodes listen on the port and the N - 1 after it, their controllers on the controller port
    (default: right after the brokers' ports) and the N - 1 after it.
    """
    kafka = settings.kafka
    if nodes == 1:
        return LocalBroker(
            home=kafka.home, data_dir=kafka.data_dir, port=kafka.port, controller_port=kafka.controller, heap=kafka.heap
        )
    controller = kafka.controller_port or kafka.port + nodes
    return LocalCluster(
        home=kafka.home,
        data_dir=kafka.data_dir,
        ports=[kafka.port + n for n in range(nodes)],
        controller_ports=[controller + n for n in range(nodes)],
        heap=kafka.heap,
    )


def serve(settings: Settings, nodes: int = 1) -> int:
    """`sluice kafka`: run the broker, or `nodes` of them, until SIGINT/SIGTERM (then 0) or one dies (its code)."""
    if nodes < 1:
        raise KafkaLocalError("--nodes: must be at least 1")
    broker = local_kafka(settings, nodes)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        broker._terminate()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            broker.start()
        except KafkaLocalError:
            if stopping:  # Ctrl-C also reaches Maven or the format tool, which then fail
                return 0
            raise
        if stopping:  # the signal came before the JVM existed to receive it
            broker.stop()
            return 0
        try:
            asyncio.run(broker.wait_ready(timeout=120))
        except KafkaLocalError:
            broker.stop()
            if stopping:
                return 0
            raise
        size = f"{nodes} nodes, " if nodes > 1 else ""
        print(f"Kafka {KAFKA_VERSION} ready on {broker.bootstrap} ({size}data: {broker.data_dir})", flush=True)
        code = broker.wait()
        # The JVM exits with 143 after our SIGTERM: that is the clean stop that was asked for.
        # Killed by a signal (negative code): report it the way a shell would, 128 + signal.
        return 0 if stopping else code if code >= 0 else 128 - code
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
