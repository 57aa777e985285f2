"""A throwaway single-node Kafka (KRaft, combined broker+controller) on this host, for benchmarks
that must not touch the lab: unpacked from the cached jar tarball into a scratch folder, started
with plain ``java`` (the tarball has the jars only, no bin/ scripts), stopped and removed at the
end.

    with LocalKafka() as kafka:
        kafka.create_topic("bench", partitions=12)
        ... produce to kafka.bootstrap ...

PLAINTEXT only: it measures clients against each other, not the lab's SASL_SSL setup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from types import TracebackType

CACHE = Path("/var/cache/sluice/kafka")
DEFAULT_VERSION = "4.4.0"
DEFAULT_ROOT = Path("/tmp/sluice-bench-kafka")

#: JVM options of the role's brokers (ansible/roles/kafka/defaults/main.yml), heap fixed here.
JVM_OPTIONS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]

LOG4J = """\
status = warn
name = sluice-bench-kafka
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
"""


class LocalKafkaError(RuntimeError):
    pass


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class LocalKafka:
    """One KRaft node: broker on ``host:port``, controller on ``host:controller_port``."""

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        version: str = DEFAULT_VERSION,
        host: str = "127.0.0.1",
        port: int = 19092,
        controller_port: int = 19093,
        heap: str = "1g",
    ) -> None:
        self.root = root
        self.version = version
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.tarball = CACHE / f"kafka_2.13-{version}.maven.tar.gz"
        self.home = root / f"kafka_2.13-{version}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise LocalKafkaError("the local broker is not running")
        return self.process.pid

    def _java(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp",
            f"{self.home / 'libs'}/*",
            main_class,
            *args,
        ]

    def _unpack(self) -> None:
        if not self.tarball.exists():
            available = sorted(p.name for p in CACHE.glob("kafka_*.tar.gz"))
            raise LocalKafkaError(
                f"no Kafka {self.version} tarball at {self.tarball}; the cache holds {available}: "
                "pass one of those versions"
            )
        expected = Path(f"{self.tarball}.sha256").read_text().split()[0]
        digest = hashlib.sha256(self.tarball.read_bytes()).hexdigest()
        if digest != expected:
            raise LocalKafkaError(
                f"{self.tarball} has sha256 {digest}, its .sha256 file says {expected}: "
                "the cached download is damaged, fetch it again"
            )
        with tarfile.open(self.tarball) as archive:
            archive.extractall(self.root, filter="data")

    def _write_config(self) -> Path:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.root / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # as the role: producers choose their compression (Sluice: lz4), brokers keep it
            "compression.type": "producer",
        }
        path = self.root / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in sorted(settings.items())))
        (self.root / "log4j2.properties").write_text(LOG4J)
        return path

    def start(self, timeout: float = 120.0) -> None:
        for port in (self.port, self.controller_port):
            if _port_open(self.host, port):
                raise LocalKafkaError(
                    f"{self.host}:{port} is already in use; stop what listens there "
                    f"(ss -ltnp 'sport = :{port}') or choose other ports"
                )
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self._unpack()
        config = self._write_config()
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(config),
                "--cluster-id",
                uuid.uuid4().hex[:22],
            ),
            check=True,
            capture_output=True,
        )
        log = (self.root / "broker.log").open("wb")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config), heap=self.heap),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise LocalKafkaError(
                    f"the local broker exited with {self.process.returncode}; "
                    f"see {self.root / 'broker.log'}"
                )
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"the local broker did not listen on {self.bootstrap}")
            time.sleep(0.5)

    def create_topic(self, name: str, partitions: int, timeout: float = 60.0) -> None:
        """Create the topic (kafka-python admin client, as Sluice's operations tooling) and wait
        until every partition has a leader."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        deadline = time.monotonic() + timeout
        while True:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="bench-admin")
                break
            except Exception:  # the broker listens before it has joined its own quorum
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
            while True:
                (described,) = admin.describe_topics([name])
                leaders = [p["leader_id"] for p in described["partitions"]]
                if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                    return
                if time.monotonic() > deadline:
                    raise LocalKafkaError(f"topic {name} has no leader on every partition")
                time.sleep(0.5)
        finally:
            admin.close()

    def end_offsets(self, topic: str) -> int:
        """Records in the topic: the sum of its partitions' end offsets."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, client_id="bench-offsets")
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            return sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close()

    def dump_batches(self, topic: str) -> list[dict[str, str]]:
        """The record batches of every partition of the topic as the broker stored them (Kafka's
        DumpLogSegments over the log files): count, producerId, compresscodec and the rest."""
        files = sorted(str(f) for f in (self.root / "data").glob(f"{topic}-*/*.log"))
        if not files:
            raise LocalKafkaError(f"no log segments of topic {topic} in {self.root / 'data'}")
        dump = subprocess.run(
            self._java("org.apache.kafka.tools.DumpLogSegments", "--files", ",".join(files)),
            check=True,
            capture_output=True,
            text=True,
        )
        batches = []
        for line in dump.stdout.splitlines():
            if line.startswith("baseOffset:"):
                words = line.split()
                batches.append(
                    {words[i].rstrip(":"): words[i + 1] for i in range(0, len(words) - 1, 2)}
                )
        return batches

    def stop(self, remove: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if remove and self.root.exists():
            shutil.rmtree(self.root)

    def __enter__(self) -> LocalKafka:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
