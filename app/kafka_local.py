"""A real Apache Kafka broker without Docker: jars from Maven Central, single-node KRaft, run by `java`."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.errors import KafkaLocalError
from app.settings import Settings

KAFKA_VERSION = "4.0.1"
LOG4J_VERSION = "2.24.3"
# Maven 3.8 resolves an old dependency plugin that cannot copy these; name a recent one.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MARKER = ".complete"

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
    <!-- Kafka logs through SLF4J 1.7 and ships no binding: -->
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


def _home(home: Path) -> Path:
    return home.expanduser().resolve() / f"kafka-{KAFKA_VERSION}"


def ensure_jars(home: Path) -> Path:
    """Return the folder of Kafka's jars, fetching them with Maven the first time only."""
    root = _home(home)
    libs = root / "libs"
    if (root / MARKER).exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLocalError(
            "Maven is required to fetch Kafka from Maven Central: install Maven 3.8+ (Debian: apt-get install maven)"
        )
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(libs, ignore_errors=True)  # a half-finished earlier fetch
    (root / "pom.xml").write_text(POM)
    print(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {root} ...", file=sys.stderr, flush=True)
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise KafkaLocalError(f"Maven could not fetch Kafka {KAFKA_VERSION} (exit {done.returncode}):\n{tail}")
    (root / MARKER).write_text(KAFKA_VERSION + "\n")
    return libs


def check_java() -> str:
    """Return the `java` to run; Kafka 4 needs Java 17 or newer."""
    java = shutil.which("java")
    message = (
        "Java 17 or newer is required to run Kafka: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
    )
    if java is None:
        raise KafkaLocalError(message)
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if found is None:
        raise KafkaLocalError(message)
    major = int(found.group(1))
    if major == 1 and found.group(2):  # "1.8.0" style
        major = int(found.group(2))
    if major < 17:
        raise KafkaLocalError(f"{message}; found Java {major}")
    return java


async def wait_for_kafka(bootstrap: str, timeout: float = 60.0) -> None:
    """Return once the broker answers a metadata request."""
    deadline = time.monotonic() + timeout
    with _quiet("aiokafka"):  # a refused connect while the JVM boots is expected, not an ERROR
        while time.monotonic() < deadline:
            if await _answers(bootstrap):
                return
            await asyncio.sleep(0.25)
    raise KafkaLocalError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s")


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


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _die_with_parent() -> None:
    """In the child before exec: a broker must not outlive a `sluice kafka` that was SIGKILLed."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalBroker:
    """One single-node KRaft broker (broker and controller in one JVM) on 127.0.0.1."""

    def __init__(
        self,
        *,
        home: Path,
        data_dir: Path,
        port: int,
        controller_port: int,
        heap: str = "512m",
        log_file: Path | None = None,
    ) -> None:
        self.home = home
        self.data_dir = data_dir.expanduser().resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        ctrl = self.controller_port
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{ctrl}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{ctrl}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir / 'logs'}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Sluice creates its topics with the partition count it needs.
                "auto.create.topics.enable=false",
                "",
            ]
        )

    def start(self) -> None:
        libs = ensure_jars(self.home)
        java = check_java()
        classpath = str(libs / "*")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(self._properties())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J)
        base = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = subprocess.run(
                [*base, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, check=True
            ).stdout.strip()
            formatted = subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise KafkaLocalError(f"formatting {self.data_dir} failed: {formatted.stderr.strip()[-2000:]}")
        out = None if self.log_file is None else self.log_file.open("ab")
        self._process = subprocess.Popen(
            [java, *self._jvm_options(), *base[1:], "kafka.Kafka", str(config)],
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )

    def _jvm_options(self) -> list[str]:
        return [f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        ready = asyncio.ensure_future(wait_for_kafka(self.bootstrap, timeout))
        while not ready.done():
            if self._process is None or self._process.poll() is not None:
                ready.cancel()
                raise KafkaLocalError(f"Kafka exited while starting{self._log_tail()}")
            await asyncio.sleep(0.2)
        ready.result()

    def _log_tail(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return ":\n" + "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])

    def wait(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.wait()

    def terminate(self) -> None:
        """Ask the JVM to shut down (SIGTERM) without waiting; safe inside a signal handler."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(settings: Settings) -> int:
    """`sluice kafka`: run the broker in the foreground until SIGINT/SIGTERM."""
    broker = LocalBroker(
        home=settings.kafka_home,
        data_dir=settings.kafka_data_dir,
        port=settings.kafka_port,
        controller_port=settings.controller_port,
        heap=settings.kafka_heap,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only signal the JVM here: the main thread is inside Popen.wait() and owns its lock.
        nonlocal stopping
        stopping = True
        broker.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    broker.start()
    try:
        asyncio.run(broker.wait_ready(timeout=120))
    except KafkaLocalError:
        broker.stop()
        if stopping:
            return 0
        raise
    print(f"Kafka {KAFKA_VERSION} ready on {broker.bootstrap} (data: {broker.data_dir})", flush=True)
    code = broker.wait()
    # The JVM exits 143 after SIGTERM: a clean stop when we asked for it.
    return 0 if stopping or code == 0 else code
