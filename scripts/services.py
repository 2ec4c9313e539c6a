#!/usr/bin/env python3
"""Start, stop and inspect the local services ghstream's tests and demo run against.

    scripts/services.py up [--kafka-brokers 1|3] [--kafka-port-base 9092] [--name main]
    scripts/services.py down
    scripts/services.py status [--json]

Everything listens on 127.0.0.1 only:

    Kafka       a KRaft broker on 9092 (controller on 9093), run from jars that Maven
                resolves (scripts/kafka/pom.xml); with --kafka-brokers 3, a 3-node cluster
                on 9092/9094/9096 (controllers 9093/9095/9097) replaces the single broker
    PostgreSQL  the Debian cluster on 5432 (installed with apt-get when missing), with
                role and database ``ghstream``
    MongoDB     ``mongod`` when it is on PATH, otherwise SecantusDB from the dev extra,
                a MongoDB-compatible stand-in for development and tests, on 27017

Data, logs and pid files live under ``.local/`` in the repository. ``up`` is idempotent:
a healthy service that already answers on its port is reused, whoever started it, and a
port held by anything else is an error. ``down`` stops only what this script started,
checking each pid's command line before signalling it.

The script itself uses only the standard library; the health checks talk to the services
with the project's own clients (aiokafka, asyncpg, pymongo), so it re-runs itself with
``.venv/bin/python`` when those are not importable. Exit status: 0 ok, 1 failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / ".local"
VENV_BIN = REPO / ".venv" / "bin"
KAFKA_POM = REPO / "scripts" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO / "scripts" / "kafka" / "log4j2.properties"
KAFKA_LIBS = LOCAL / "kafka" / "libs"

HOST = "127.0.0.1"
DEFAULT_KAFKA_NAME = "main"
DEFAULT_KAFKA_PORT_BASE = 9092
# Ingest sends events of a few MB; brokers and clients agree on this limit.
KAFKA_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
KAFKA_HEAP = "-Xmx512m"
POSTGRES_PORT = 5432
POSTGRES_USER = "ghstream"
POSTGRES_PASSWORD = "ghstream"
POSTGRES_DB = "ghstream"
MONGO_PORT = 27017

INSTALL_JAVA_HINT = "install it with: apt-get install -y openjdk-17-jre-headless maven"


class ServiceError(Exception):
    """A service could not be started, stopped or reached; the message says why and what to do."""


def say(message: str) -> None:
    print(message, flush=True)


def postgres_dsn(*, masked: bool = False, database: str = POSTGRES_DB) -> str:
    password = "***" if masked else POSTGRES_PASSWORD
    return f"postgresql://{POSTGRES_USER}:{password}@{HOST}:{POSTGRES_PORT}/{database}"


def mongo_url() -> str:
    return f"mongodb://{HOST}:{MONGO_PORT}"


# --- processes and ports -------------------------------------------------------------------


def port_answers(port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # st 0A is LISTEN; the local address ends in the port in hex.
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def who_listens(port: int) -> str:
    """Name the process listening on ``port``, as well as /proc lets us see it."""
    inodes = _listening_inodes(port)
    if inodes:
        wanted = {f"socket:[{inode}]" for inode in inodes}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    if os.readlink(fd) in wanted:
                        return f"pid {proc.name}: {cmdline(int(proc.name))[:160]}"
    return "a process this script cannot identify"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


# Processes this interpreter started, kept so each can be reaped: see spawn().
_CHILDREN: list[subprocess.Popen[bytes]] = []


def pid_running(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive (not a zombie) and its command line contains ``marker``."""
    for child in _CHILDREN:
        if child.pid == pid:
            # Our own child (the test fixtures start brokers): reap it if it has exited.
            child.poll()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    return marker in cmdline(pid)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(
    argv: list[str], *, log_path: Path, pid_file: Path, env: dict[str, str] | None = None
) -> int:
    """Start a detached process with its output appended to ``log_path``; record its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: Ctrl+C on `make` or a test run must not take the service down.
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    # Keep the handle: a Popen collected while its process runs warns (ResourceWarning),
    # which pytest turns into an error when a fixture starts a broker.
    _CHILDREN.append(proc)
    return proc.pid


@dataclass(frozen=True)
class OwnedProcess:
    """A process this script started: its pid, what its command line must contain, a label."""

    pid: int
    marker: str
    what: str


def stop_processes(processes: list[OwnedProcess], *, timeout_s: float = 30.0) -> None:
    """SIGTERM those still ours all at once, then SIGKILL whatever outlives ``timeout_s``.

    All at once, because the nodes of a KRaft cluster stopped one by one lose their quorum
    and the last one then waits for a controller that no longer exists.
    """
    alive = [p for p in processes if pid_running(p.pid, p.marker)]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        for process in [p for p in alive if not pid_running(p.pid, p.marker)]:
            say(f"  stopped {process.what} (pid {process.pid})")
            alive.remove(process)
    for process in alive:
        say(f"  {process.what} (pid {process.pid}) outlived SIGTERM by {timeout_s:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        while pid_running(process.pid, process.marker):
            time.sleep(0.1)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {line}" for line in text)


def did_not_come_up(what: str, log_path: Path, why: str) -> ServiceError:
    rel = log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path
    return ServiceError(f"{what} did not come up: {why}\n  log: {rel}\n{log_tail(log_path)}")


def run_async(coro: Any) -> Any:
    """Run a probe to completion on its own loop in a worker thread.

    A thread keeps it clear of any loop the caller runs: the test fixtures call these
    helpers from inside pytest-asyncio's session loop.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def quiet_client_logs() -> None:
    # The probes fail on purpose while a service starts; their clients would log each try.
    for name in ("aiokafka", "kafka", "pymongo", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        if auto_install():
            apt_install(["openjdk-17-jre-headless", "maven"], why=f"{name} is missing")
            path = shutil.which(name)
        if path is None:
            raise ServiceError(f"{name} is not on PATH: {hint}")
    return path


def auto_install() -> bool:
    """Install missing system packages only in CI (as root) or when asked to."""
    wanted = os.environ.get("GHSTREAM_AUTO_INSTALL", os.environ.get("CI", "")).lower()
    return os.geteuid() == 0 and wanted in ("1", "true", "yes")


def apt_install(packages: list[str], *, why: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(f"{why}: run as root: apt-get install -y {' '.join(packages)}")
    say(f"{why}: running apt-get update && apt-get install -y {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise ServiceError(f"`{' '.join(argv)}` failed with exit status {result.returncode}")


# --- Kafka ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaLayout:
    """Where the nodes of one local Kafka instance listen and keep their files.

    Node ``i`` (1-based) serves clients on ``port_base + 2*(i-1)`` and runs its KRaft
    controller on the port after it. Every node is a combined broker and controller.
    """

    name: str = DEFAULT_KAFKA_NAME
    brokers: int = 1
    port_base: int = DEFAULT_KAFKA_PORT_BASE

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.brokers + 1))

    def client_port(self, node_id: int) -> int:
        return self.port_base + 2 * (node_id - 1)

    def controller_port(self, node_id: int) -> int:
        return self.client_port(node_id) + 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{self.client_port(n)}" for n in self.node_ids)

    @property
    def directory(self) -> Path:
        return LOCAL / "kafka" / self.name

    def node_dir(self, node_id: int) -> Path:
        return self.directory / f"node-{node_id}"

    def properties_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "kafka.pid"

    def console_log(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "logs" / "console.log"

    def server_log(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "logs" / "server.log"

    @property
    def mode(self) -> str:
        return "single broker" if self.brokers == 1 else f"{self.brokers}-broker cluster"


def kafka_marker(layout: KafkaLayout, node_id: int) -> str:
    """What the command line of our broker process contains: its own properties file."""
    return str(layout.properties_path(node_id))


def kafka_properties(layout: KafkaLayout, node_id: int) -> str:
    voters = ",".join(f"{n}@{HOST}:{layout.controller_port(n)}" for n in layout.node_ids)
    replication = min(layout.brokers, 3)
    min_isr = 2 if layout.brokers >= 3 else 1
    settings = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": voters,
        "listeners": (
            f"PLAINTEXT://{HOST}:{layout.client_port(node_id)},"
            f"CONTROLLER://{HOST}:{layout.controller_port(node_id)}"
        ),
        "advertised.listeners": f"PLAINTEXT://{HOST}:{layout.client_port(node_id)}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": layout.node_dir(node_id) / "data",
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        # Fewer than the default 50: the first consumer group on a fresh broker is then ready
        # sooner, which is most of what a test run waits for.
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        "message.max.bytes": KAFKA_MAX_MESSAGE_BYTES,
        "replica.fetch.max.bytes": KAFKA_MAX_MESSAGE_BYTES,
    }
    header = f"# Written by scripts/services.py for Kafka '{layout.name}' ({layout.mode}).\n"
    return header + "".join(f"{key}={value}\n" for key, value in settings.items())


def java_major_version(java: str) -> int:
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    # e.g. `openjdk version "17.0.15" 2025-04-15`, or "1.8.0_412" for Java 8.
    for token in result.stderr.split():
        version = token.strip('"')
        if token.startswith('"') and version[:1].isdigit():
            parts = version.split(".")
            return int(parts[1]) if parts[0] == "1" else int(parts[0].split("-")[0])
    return 0


def ensure_java() -> str:
    java = require_tool("java", f"Kafka 4 needs Java 17 or newer; {INSTALL_JAVA_HINT}")
    major = java_major_version(java)
    if major < 17:
        raise ServiceError(f"{java} is Java {major or '?'}; Kafka 4 needs 17+: {INSTALL_JAVA_HINT}")
    return java


def ensure_kafka_jars() -> None:
    """Copy the broker's jars into .local/kafka/libs unless the pom has not changed since."""
    stamp = KAFKA_LIBS / ".pom-stamp"
    pom = KAFKA_POM.read_bytes()
    if stamp.exists() and stamp.read_bytes() == pom and any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        return
    mvn = require_tool("mvn", f"Maven fetches Kafka's jars; {INSTALL_JAVA_HINT}")
    say("Resolving Kafka's jars with Maven (scripts/kafka/pom.xml -> .local/kafka/libs) ...")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    KAFKA_LIBS.mkdir(parents=True)
    started = time.monotonic()
    argv = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(KAFKA_POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={KAFKA_LIBS}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise ServiceError("Maven could not resolve Kafka's jars:\n" + "\n".join(output))
    stamp.write_bytes(pom)
    say(f"  {len(list(KAFKA_LIBS.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")


def kafka_java_argv(java: str, main_class: str, *args: str, logs_dir: Path) -> list[str]:
    return [
        java,
        KAFKA_HEAP,
        "-Xms128m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        f"{KAFKA_LIBS}/*",
        main_class,
        *args,
    ]


def new_cluster_id() -> str:
    # Kafka's own format: a random UUID, base64url without padding, never starting with "-".
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def describe_kafka_async(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    timeout_ms = max(int(timeout_s * 1000), 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            description: dict[str, Any] = await admin.describe_cluster()
            return description
    finally:
        await admin.close()


def describe_kafka(bootstrap: str, *, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """Cluster id and live brokers from a real metadata request, or None if it does not answer."""
    quiet_client_logs()
    try:
        description: dict[str, Any] = run_async(describe_kafka_async(bootstrap, timeout_s))
    except Exception:
        return None
    return description


def kafka_state_path(layout_dir: Path) -> Path:
    return layout_dir / "state.json"


def read_kafka_state(name: str) -> dict[str, Any] | None:
    path = kafka_state_path(LOCAL / "kafka" / name)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def layout_from_state(name: str) -> KafkaLayout | None:
    state = read_kafka_state(name)
    if state is None:
        return None
    return KafkaLayout(name=name, brokers=state["brokers"], port_base=state["port_base"])


def kafka_node_pid(layout: KafkaLayout, node_id: int) -> int | None:
    """The pid of our broker process for ``node_id`` if it is running."""
    pid = read_pid(layout.pid_file(node_id))
    if pid is not None and pid_running(pid, kafka_marker(layout, node_id)):
        return pid
    return None


def kafka_instances() -> list[KafkaLayout]:
    root = LOCAL / "kafka"
    if not root.is_dir():
        return []
    layouts = (layout_from_state(p.name) for p in sorted(root.iterdir()) if p.name != "libs")
    return [layout for layout in layouts if layout is not None]


class Kafka:
    """One named local Kafka instance: a single broker or a cluster of combined nodes."""

    def __init__(self, layout: KafkaLayout) -> None:
        self.layout = layout

    def pids(self) -> dict[int, int | None]:
        return {n: kafka_node_pid(self.layout, n) for n in self.layout.node_ids}

    def up(self, *, timeout_s: float) -> None:
        layout = self.layout
        self._replace_other_mode()
        pids = self.pids()
        if not any(pids.values()) and self._reuse_foreign():
            return

        missing = [n for n, pid in pids.items() if pid is None]
        for node_id in missing:
            for port in (layout.client_port(node_id), layout.controller_port(node_id)):
                if port_answers(port):
                    raise ServiceError(
                        f"port {port} (Kafka '{layout.name}' node {node_id}) is taken by "
                        f"{who_listens(port)}; stop it or pick --kafka-port-base"
                    )

        if missing:
            java = ensure_java()
            ensure_kafka_jars()
            say(f"Starting Kafka '{layout.name}' ({layout.mode}), node(s) {missing} ...")
            cluster_id = self._state()["cluster_id"]
            self._format([n for n in missing if self._needs_format(n)], java, cluster_id)
            for node_id in missing:
                self.start_node(node_id, java=java)
        self.wait_ready(timeout_s=timeout_s)
        state = "running" if not missing else "up"
        say(f"Kafka '{layout.name}' ({layout.mode}) {state} on {layout.bootstrap}")

    def _replace_other_mode(self) -> None:
        """Stop and wipe this instance if it last ran with another broker count or ports."""
        previous = layout_from_state(self.layout.name)
        if previous is None or previous == self.layout:
            return
        say(
            f"Kafka '{self.layout.name}' ran as a {previous.mode} on {previous.bootstrap}: "
            f"replacing it with a {self.layout.mode} on {self.layout.bootstrap}"
        )
        Kafka(previous).down()
        shutil.rmtree(self.layout.directory, ignore_errors=True)

    def _reuse_foreign(self) -> bool:
        """Use a Kafka that someone else runs on our bootstrap port, if it fits."""
        port = self.layout.client_port(1)
        if not port_answers(port):
            return False
        description = describe_kafka(f"{HOST}:{port}")
        if description is None:
            raise ServiceError(
                f"port {port} is taken by {who_listens(port)}, which does not answer as a "
                "Kafka broker; stop it or pick another --kafka-port-base"
            )
        brokers = len(description["brokers"])
        if brokers != self.layout.brokers:
            raise ServiceError(
                f"the Kafka already running on {HOST}:{port} ({who_listens(port)}) has "
                f"{brokers} broker(s), not the {self.layout.brokers} asked for; stop it first"
            )
        say(
            f"Using the Kafka already running on {HOST}:{port} ({brokers} broker(s), "
            f"cluster id {description['cluster_id']}); it was not started from this checkout"
        )
        return True

    def _state(self) -> dict[str, Any]:
        path = kafka_state_path(self.layout.directory)
        state = read_kafka_state(self.layout.name)
        if state is None:
            state = {
                "brokers": self.layout.brokers,
                "port_base": self.layout.port_base,
                "cluster_id": new_cluster_id(),
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state, indent=2) + "\n")
        return state

    def _needs_format(self, node_id: int) -> bool:
        return not (self.layout.node_dir(node_id) / "data" / "meta.properties").exists()

    def _format(self, node_ids: list[int], java: str, cluster_id: str) -> None:
        """Format the storage of new nodes, all at once: each run is a JVM start."""
        running = []
        for node_id in node_ids:
            properties = self.layout.properties_path(node_id)
            properties.parent.mkdir(parents=True, exist_ok=True)
            properties.write_text(kafka_properties(self.layout, node_id))
            logs_dir = self.layout.node_dir(node_id) / "logs"
            logs_dir.mkdir(exist_ok=True)
            # Static controller.quorum.voters: no --standalone/--initial-controllers here.
            argv = kafka_java_argv(
                java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                "--ignore-formatted",
                logs_dir=logs_dir,
            )
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            running.append((node_id, proc))
        for node_id, proc in running:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                raise ServiceError(
                    f"formatting the storage of Kafka '{self.layout.name}' node {node_id} failed:"
                    f"\n{output.strip()}"
                )

    def start_node(self, node_id: int, *, java: str | None = None) -> int:
        """Start one node whose storage is formatted; return its pid without waiting."""
        java = java or ensure_java()
        properties = self.layout.properties_path(node_id)
        properties.write_text(kafka_properties(self.layout, node_id))
        argv = kafka_java_argv(
            java, "kafka.Kafka", str(properties), logs_dir=self.layout.node_dir(node_id) / "logs"
        )
        return spawn(
            argv, log_path=self.layout.console_log(node_id), pid_file=self.layout.pid_file(node_id)
        )

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would, and wait until it is gone."""
        pid = kafka_node_pid(self.layout, node_id)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        while pid_running(pid, kafka_marker(self.layout, node_id)):
            time.sleep(0.05)

    def wait_ready(self, *, timeout_s: float) -> None:
        """Wait until every node is alive and listed in the cluster's metadata."""
        deadline = time.monotonic() + timeout_s
        expected = set(self.layout.node_ids)
        seen: set[int] = set()
        while time.monotonic() < deadline:
            for node_id, pid in self.pids().items():
                if pid is None:
                    raise did_not_come_up(
                        f"Kafka '{self.layout.name}' node {node_id}",
                        self.layout.server_log(node_id)
                        if self.layout.server_log(node_id).exists()
                        else self.layout.console_log(node_id),
                        "the broker process exited",
                    )
            description = describe_kafka(self.layout.bootstrap, timeout_s=3.0)
            if description is not None:
                seen = {broker["node_id"] for broker in description["brokers"]}
                if seen >= expected:
                    return
            time.sleep(0.5)
        raise did_not_come_up(
            f"Kafka '{self.layout.name}'",
            self.layout.server_log(1),
            f"after {timeout_s:.0f} s the metadata lists brokers {sorted(seen) or 'none'}, "
            f"expected {sorted(expected)}",
        )

    def down(self) -> None:
        processes = []
        for node_id in self.layout.node_ids:
            pid = read_pid(self.layout.pid_file(node_id))
            if pid is not None:
                what = f"Kafka '{self.layout.name}' node {node_id}"
                processes.append(OwnedProcess(pid, kafka_marker(self.layout, node_id), what))
        stop_processes(processes)
        for node_id in self.layout.node_ids:
            self.layout.pid_file(node_id).unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        pids = self.pids()
        description = describe_kafka(self.layout.bootstrap, timeout_s=3.0)
        return {
            "service": "kafka",
            "name": self.layout.name,
            "mode": self.layout.mode,
            "endpoint": self.layout.bootstrap,
            "answers": description is not None,
            "brokers": sorted(b["node_id"] for b in description["brokers"]) if description else [],
            "ours": {str(n): pid for n, pid in pids.items()},
            "logs": str(self.layout.directory.relative_to(REPO)),
        }


# --- PostgreSQL ----------------------------------------------------------------------------

POSTGRES_STARTED = LOCAL / "postgres" / "started-by-us"


@dataclass(frozen=True)
class PgCluster:
    version: str
    name: str
    port: int
    online: bool
    log: Path


def pg_clusters() -> list[PgCluster]:
    if shutil.which("pg_lsclusters") is None:
        return []
    result = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    clusters = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 7:
            version, name, port, status, _owner, _data, log = fields[:7]
            clusters.append(
                PgCluster(version, name, int(port), status.startswith("online"), Path(log))
            )
    return clusters


async def _postgres_ping(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


def postgres_ping() -> tuple[str | None, str]:
    """(server version, "") if our role can log in to our database, else (None, the error)."""
    try:
        return run_async(_postgres_ping(postgres_dsn())), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


PROVISION_SQL = f"""
SELECT 'CREATE ROLE {POSTGRES_USER}'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{POSTGRES_USER}')\\gexec
ALTER ROLE {POSTGRES_USER} WITH LOGIN CREATEDB PASSWORD '{POSTGRES_PASSWORD}';
SELECT 'CREATE DATABASE {POSTGRES_DB} OWNER {POSTGRES_USER}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{POSTGRES_DB}')\\gexec
"""


def as_postgres_user(
    argv: list[str], *, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        raise ServiceError(f"`{' '.join(argv)}` must run as the postgres OS user: run this as root")
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )


class Postgres:
    """The Debian PostgreSQL cluster on 5432, with the ghstream role and database."""

    def up(self, *, timeout_s: float) -> None:
        if port_answers(POSTGRES_PORT):
            self._reuse()
            return

        cluster = self._local_cluster()
        say(f"Starting PostgreSQL {cluster.version}/{cluster.name} (pg_ctlcluster) ...")
        result = subprocess.run(
            ["pg_ctlcluster", cluster.version, cluster.name, "start"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise did_not_come_up(
                "PostgreSQL", cluster.log, (result.stderr or result.stdout).strip()
            )
        POSTGRES_STARTED.parent.mkdir(parents=True, exist_ok=True)
        POSTGRES_STARTED.write_text(f"{cluster.version} {cluster.name}\n")
        self._wait(cluster.log, timeout_s=timeout_s)
        self._provision()
        self._check_login(cluster.log)
        say(f"PostgreSQL up on {postgres_dsn(masked=True)}")

    def _reuse(self) -> None:
        local = [c for c in pg_clusters() if c.port == POSTGRES_PORT and c.online]
        version, error = postgres_ping()
        if version is None and local and os.geteuid() == 0:
            self._provision()
            version, error = postgres_ping()
        if version is None:
            raise ServiceError(
                f"port {POSTGRES_PORT} is taken by {who_listens(POSTGRES_PORT)}, but role "
                f"'{POSTGRES_USER}' cannot use it ({error}); create the role and database "
                f"(see scripts/services.py PROVISION_SQL) or stop that server"
            )
        whose = "ours" if POSTGRES_STARTED.exists() else "not started by this checkout"
        say(
            f"Using the PostgreSQL {version} already running ({whose}) on "
            f"{postgres_dsn(masked=True)}"
        )

    def _local_cluster(self) -> PgCluster:
        """The cluster to start on 5432, installing or creating one when there is none."""
        if shutil.which("pg_ctlcluster") is None:
            apt_install(["postgresql"], why="PostgreSQL is not installed")
        clusters = pg_clusters()
        for cluster in clusters:
            if cluster.port == POSTGRES_PORT:
                return cluster
        versions = sorted({p.name for p in Path("/usr/lib/postgresql").glob("*")}, key=int)
        if not versions:
            raise ServiceError("PostgreSQL's server is missing: apt-get install -y postgresql")
        say(f"Creating PostgreSQL cluster {versions[-1]}/main on port {POSTGRES_PORT} ...")
        subprocess.run(
            ["pg_createcluster", versions[-1], "main", "--port", str(POSTGRES_PORT)],
            check=True,
            capture_output=True,
        )
        return next(c for c in pg_clusters() if c.port == POSTGRES_PORT)

    def _wait(self, log: Path, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = subprocess.run(["pg_isready", "-q", "-h", HOST, "-p", str(POSTGRES_PORT)])
            if ready.returncode == 0:
                return
            time.sleep(0.3)
        raise did_not_come_up("PostgreSQL", log, f"pg_isready still fails after {timeout_s:.0f} s")

    def _provision(self) -> None:
        argv = [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            str(POSTGRES_PORT),
            "-d",
            "postgres",
        ]
        result = as_postgres_user(argv, stdin=PROVISION_SQL)
        if result.returncode != 0:
            raise ServiceError(
                f"creating role and database '{POSTGRES_DB}' failed:\n{result.stderr}"
            )

    def _check_login(self, log: Path) -> None:
        version, error = postgres_ping()
        if version is None:
            raise did_not_come_up(
                "PostgreSQL", log, f"role '{POSTGRES_USER}' cannot log in: {error}"
            )

    def down(self) -> None:
        try:
            version, name = POSTGRES_STARTED.read_text().split()
        except (OSError, ValueError):
            if port_answers(POSTGRES_PORT):
                say("  PostgreSQL was not started by this checkout: leaving it running")
            return
        result = subprocess.run(
            ["pg_ctlcluster", version, name, "stop"], capture_output=True, text=True
        )
        if result.returncode != 0 and "not running" not in result.stderr:
            raise ServiceError(
                f"pg_ctlcluster {version} {name} stop failed: {result.stderr.strip()}"
            )
        POSTGRES_STARTED.unlink()
        say(f"  stopped PostgreSQL {version}/{name}")

    def status(self) -> dict[str, Any]:
        version, error = postgres_ping()
        return {
            "service": "postgres",
            "endpoint": postgres_dsn(masked=True),
            "answers": version is not None,
            "version": version,
            "error": error or None,
            "ours": POSTGRES_STARTED.exists(),
        }


# --- MongoDB -------------------------------------------------------------------------------

MONGO_DIR = LOCAL / "mongo"
MONGO_PID = MONGO_DIR / "mongo.pid"
MONGO_LOG = MONGO_DIR / "mongo.log"
MONGO_DATA = MONGO_DIR / "data"


def mongo_ping(*, timeout_s: float = 1.0) -> str | None:
    """The server's version if a MongoDB (or a compatible server) answers a ping."""
    quiet_client_logs()
    from pymongo import MongoClient

    timeout_ms = int(timeout_s * 1000)
    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_url(), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        version = client.server_info().get("version", "?")
        return str(version)
    except Exception:
        return None
    finally:
        client.close()


def mongo_server_argv() -> tuple[list[str], str]:
    """The server to run and what to call it: real mongod if installed, else SecantusDB."""
    mongod = shutil.which("mongod")
    if mongod:
        return [
            mongod,
            "--bind_ip",
            HOST,
            "--port",
            str(MONGO_PORT),
            "--dbpath",
            str(MONGO_DATA),
        ], "mongod"
    secantus = VENV_BIN / "secantusd-py"
    if not secantus.exists():
        raise ServiceError(
            "neither mongod nor SecantusDB (.venv/bin/secantusd-py) found: run `make install`"
        )
    argv = [
        str(secantus),
        "--host",
        HOST,
        "--port",
        str(MONGO_PORT),
        "--storage-path",
        str(MONGO_DATA),
        "--log-level",
        "WARNING",
    ]
    return argv, "SecantusDB (a MongoDB stand-in for development and tests)"


class Mongo:
    def up(self, *, timeout_s: float) -> None:
        pid = read_pid(MONGO_PID)
        if pid is not None and pid_running(pid, str(MONGO_DATA)):
            self._wait(pid, "MongoDB", timeout_s=timeout_s)
            say(f"MongoDB running on {mongo_url()} (pid {pid})")
            return
        if port_answers(MONGO_PORT):
            version = mongo_ping(timeout_s=3.0)
            if version is None:
                raise ServiceError(
                    f"port {MONGO_PORT} is taken by {who_listens(MONGO_PORT)}, which does not "
                    "answer a MongoDB ping; stop it"
                )
            say(
                f"Using the MongoDB-compatible server {version} already running on {mongo_url()} "
                f"({who_listens(MONGO_PORT)})"
            )
            return

        argv, what = mongo_server_argv()
        MONGO_DATA.mkdir(parents=True, exist_ok=True)
        say(f"Starting {what} ...")
        pid = spawn(argv, log_path=MONGO_LOG, pid_file=MONGO_PID)
        self._wait(pid, what, timeout_s=timeout_s)
        say(f"MongoDB up on {mongo_url()} ({what}, pid {pid})")

    def _wait(self, pid: int, what: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_running(pid, str(MONGO_DATA)):
                raise did_not_come_up(what, MONGO_LOG, "the server process exited")
            if mongo_ping() is not None:
                return
            time.sleep(0.3)
        raise did_not_come_up(what, MONGO_LOG, f"no answer to ping after {timeout_s:.0f} s")

    def down(self) -> None:
        pid = read_pid(MONGO_PID)
        if pid is not None:
            stop_processes([OwnedProcess(pid, str(MONGO_DATA), "MongoDB")])
        MONGO_PID.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        pid = read_pid(MONGO_PID)
        ours = pid if pid is not None and pid_running(pid, str(MONGO_DATA)) else None
        version = mongo_ping()
        return {
            "service": "mongo",
            "endpoint": mongo_url(),
            "answers": version is not None,
            "version": version,
            "ours": ours,
            "log": str(MONGO_LOG.relative_to(REPO)),
        }


# --- command line --------------------------------------------------------------------------

SERVICES = ("kafka", "postgres", "mongo")


def selected(only: str | None) -> list[str]:
    if not only:
        return list(SERVICES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        raise ServiceError(
            f"--only: unknown service(s) {unknown}; choose from {', '.join(SERVICES)}"
        )
    return names


def cmd_up(args: argparse.Namespace) -> None:
    services = selected(args.only)
    started = time.monotonic()
    if "kafka" in services:
        layout = KafkaLayout(
            name=args.name, brokers=args.kafka_brokers, port_base=args.kafka_port_base
        )
        Kafka(layout).up(timeout_s=args.timeout_s)
    if "postgres" in services:
        Postgres().up(timeout_s=args.timeout_s)
    if "mongo" in services:
        Mongo().up(timeout_s=args.timeout_s)
    say(f"Services ready in {time.monotonic() - started:.1f} s.")
    print_endpoints(services, args.name)


def print_endpoints(services: list[str], kafka_name: str) -> None:
    if "kafka" in services:
        layout = layout_from_state(kafka_name)
        bootstrap = layout.bootstrap if layout else f"{HOST}:{DEFAULT_KAFKA_PORT_BASE}"
        say(f"  GHSTREAM_KAFKA_BOOTSTRAP={bootstrap}")
    if "postgres" in services:
        say(f"  GHSTREAM_POSTGRES_DSN={postgres_dsn(masked=True)}")
    if "mongo" in services:
        say(f"  GHSTREAM_MONGO_URL={mongo_url()}")


def cmd_down(args: argparse.Namespace) -> None:
    services = selected(args.only)
    if "kafka" in services:
        for layout in kafka_instances():
            if args.name in (None, layout.name):
                Kafka(layout).down()
    if "mongo" in services:
        Mongo().down()
    if "postgres" in services:
        Postgres().down()
    say("Services stopped (those this checkout started).")


def cmd_status(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [Kafka(layout).status() for layout in kafka_instances()]
    if not any(row["name"] == DEFAULT_KAFKA_NAME for row in rows):
        default = KafkaLayout()
        answers = describe_kafka(default.bootstrap, timeout_s=2.0)
        rows.insert(
            0,
            {
                "service": "kafka",
                "name": DEFAULT_KAFKA_NAME,
                "mode": "not started here",
                "endpoint": default.bootstrap,
                "answers": answers is not None,
                "brokers": sorted(b["node_id"] for b in answers["brokers"]) if answers else [],
                "ours": {},
            },
        )
    rows += [Postgres().status(), Mongo().status()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            say(format_status(row))
    main_ones = [r for r in rows if r["service"] != "kafka" or r["name"] == DEFAULT_KAFKA_NAME]
    return 0 if all(row["answers"] for row in main_ones) else 1


def format_status(row: dict[str, Any]) -> str:
    state = "up  " if row["answers"] else "DOWN"
    if row["service"] == "kafka":
        ours = {n: pid for n, pid in row["ours"].items() if pid}
        if ours:
            owner = f"our pids {ours}"
        else:
            owner = "not started by this checkout" if row["answers"] else "not running"
        detail = f"{row['mode']}, brokers {row['brokers']}, {owner}"
        return f"kafka[{row['name']}]  {state}  {row['endpoint']}  ({detail})"
    if row["service"] == "postgres":
        detail = f"PostgreSQL {row['version']}" if row["answers"] else row["error"]
        owner = "started by us" if row["ours"] else "not started by this checkout"
        return f"postgres     {state}  {row['endpoint']}  ({detail}, {owner})"
    owner = f"our pid {row['ours']}" if row["ours"] else "not started by this checkout"
    return f"mongo        {state}  {row['endpoint']}  (version {row['version']}, {owner})"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/services.py", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="start the services (idempotent) and wait until they answer"
    )
    up.add_argument(
        "--kafka-brokers",
        type=int,
        choices=(1, 3),
        default=int(os.environ.get("KAFKA_BROKERS", "1")),
        help="1: a single broker; 3: a cluster replacing it (default: $KAFKA_BROKERS or 1)",
    )
    up.add_argument(
        "--kafka-port-base",
        type=int,
        default=DEFAULT_KAFKA_PORT_BASE,
        help="client port of Kafka node 1; node i uses base+2(i-1), controllers +1",
    )
    up.add_argument(
        "--name",
        default=DEFAULT_KAFKA_NAME,
        help="name of the Kafka instance, its folder under .local/kafka",
    )
    up.add_argument(
        "--timeout-s", type=float, default=120.0, help="how long to wait for each service"
    )
    up.add_argument("--only", help="comma-separated subset of: " + ",".join(SERVICES))

    down = commands.add_parser("down", help="stop the services this checkout started")
    down.add_argument("--name", default=None, help="stop only this Kafka instance (default: all)")
    down.add_argument("--only", help="comma-separated subset of: " + ",".join(SERVICES))

    status = commands.add_parser("status", help="which services answer, and which are ours")
    status.add_argument("--json", action="store_true", help="print JSON")
    return parser.parse_args(argv)


def ensure_clients() -> None:
    """Re-run under the project's venv when its clients are not importable here."""
    if all(importlib.util.find_spec(m) for m in ("aiokafka", "asyncpg", "pymongo")):
        return
    venv_python = VENV_BIN / "python"
    if venv_python.exists() and Path(sys.executable) != venv_python:
        os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
    raise ServiceError(
        "the health checks need aiokafka, asyncpg and pymongo: run `make install` first"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ensure_clients()
        if args.command == "up":
            cmd_up(args)
        elif args.command == "down":
            cmd_down(args)
        else:
            return cmd_status(args)
    except ServiceError as exc:
        print(f"services: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("services: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
