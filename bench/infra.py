"""The services the benchmark uses: throwaway topics, databases, and timed subprocesses.

Everything a stage creates carries a ``bench-`` prefix and a random suffix, and
is deleted when the stage ends, so the benchmark can run beside the test suite
on the same Kafka, PostgreSQL and MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import MongoClient

from ghstream import config

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
OUT = ROOT / "bench" / "out"
BOOTSTRAP = os.environ.get("GHSTREAM_KAFKA_BOOTSTRAP", config.DEFAULT_BOOTSTRAP)
POSTGRES_DSN = os.environ.get("GHSTREAM_POSTGRES_DSN", config.DEFAULT_POSTGRES_DSN)
MONGO_URL = os.environ.get("GHSTREAM_MONGO_URL", config.DEFAULT_MONGO_URL)
PARTITIONS = 6
COMPRESSION = "zstd"
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def unique(prefix: str) -> str:
    """``bench_<prefix>_<8 hex>``: a name no test or earlier run uses."""
    return f"bench_{prefix}_{uuid.uuid4().hex[:8]}"


# -- Kafka -----------------------------------------------------------------------------------


async def create_topics(names: Sequence[str], partitions: int = PARTITIONS) -> None:
    """Create ``names`` (and their ``.dlq``) with the limits ``ghstream ingest`` uses."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        all_names = [n for name in names for n in (name, config.dlq_topic(name))]
        topic_config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs=topic_config) for n in all_names]
        )
        while True:  # leaders first: a producer started earlier would get errors
            described = await admin.describe_topics(all_names)
            if all(
                t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for name in names for n in (name, config.dlq_topic(name)) if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def topic_size(name: str) -> int:
    """Messages in ``name``: the sum of its partitions' end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(name) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(name) or set()
        ends = await consumer.end_offsets([TopicPartition(name, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def topic(prefix: str, partitions: int = PARTITIONS) -> AsyncIterator[str]:
    name = unique(prefix).replace("_", "-")
    await create_topics([name], partitions)
    try:
        yield name
    finally:
        await delete_topics([name])


# -- PostgreSQL and MongoDB ------------------------------------------------------------------


def dsn_for(database: str) -> str:
    parts = urlsplit(POSTGRES_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(name: str) -> str:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_for(name)


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        # FORCE cannot end an autovacuum worker (not our role): wait for it to finish.
        async with asyncio.timeout(120):
            while True:
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    return
                except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                    await asyncio.sleep(0.2)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database(prefix: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; yields its DSN."""
    name = unique(prefix)
    dsn = await create_database(name)
    try:
        yield dsn
    finally:
        await drop_database(name)


def drop_mongo(name: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(MONGO_URL)
    try:
        client.drop_database(name)
    finally:
        client.close()


# -- subprocesses ----------------------------------------------------------------------------


@dataclass
class Run:
    """A finished subprocess: wall time, peak RSS, exit code and output."""

    wall_s: float
    max_rss_mb: float
    """Peak RSS of the whole process tree (the command and its workers), sampled every 20 ms."""
    returncode: int
    stdout: str
    stderr: str


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    stdin: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> Run:
    """Run ``cmd`` to completion, with the peak RSS of its process tree (see :class:`TreeRss`)."""
    OUT.mkdir(parents=True, exist_ok=True)
    out_path = OUT / f"{uuid.uuid4().hex[:8]}.out"
    err_path = OUT / f"{uuid.uuid4().hex[:8]}.err"
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    with (
        out_path.open("wb") as out,
        err_path.open("wb") as err,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as inp,
    ):
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(part) for part in cmd], stdin=inp, stdout=out, stderr=err, env=full_env
        )
        sampler = TreeRss(process.pid)
        _, status, _ = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    result = Run(
        wall_s=wall,
        max_rss_mb=sampler.peak_mb,
        returncode=process.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )
    out_path.unlink()
    err_path.unlink()
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


class TreeRss:
    """Samples the peak RSS of a process and its descendants in a thread.

    Not ``wait4``'s ``ru_maxrss``: on Linux a child keeps the high-water mark of
    the address space it replaced at ``exec``, which is this (large) benchmark
    process's, so every child would report at least the parent's size. Instead
    each sample reads ``VmHWM``, the kernel's exact peak of the main process's
    own address space so far, and the summed ``VmRSS`` of the whole tree
    (``ghstream ingest`` may parse in worker processes); the peak is the larger.
    """

    TREE_EVERY = 25
    """Samples between two scans of ``/proc`` for the tree's members (worker processes).

    A scan costs ~3 ms of CPU; done at every 20 ms sample it took ~14% of a core
    from the measured command on a 2-core machine. Workers start early and live long.
    """

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._interval_s = interval_s
        self._tree = {pid}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        samples = 0
        while not self._done.wait(self._interval_s):
            if samples % self.TREE_EVERY == 0:
                self._tree = _tree_of(self.pid)
            samples += 1
            hwm_kb = _status_kb(self.pid, "VmHWM:")
            tree_kb = sum(_status_kb(pid, "VmRSS:") for pid in self._tree)
            self.peak_mb = max(self.peak_mb, hwm_kb / 1024, tree_kb / 1024)


def _status_kb(pid: int, field: str) -> int:
    """A ``kB`` line of ``/proc/PID/status``; 0 once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _tree_of(root: int) -> set[int]:
    """``root`` and its descendants, from a scan of ``/proc``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def ghstream(*args: str | os.PathLike[str]) -> list[str | os.PathLike[str]]:
    """The command line of the installed ``ghstream`` CLI."""
    return [BIN / "ghstream", *args]


# -- shared inputs ---------------------------------------------------------------------------

_filled: dict[str, str] = {}


def filled_topic(archive: Path, events: int) -> str:
    """A topic holding ``archive`` as ``ghstream ingest`` wrote it; made once per run."""
    key = str(archive)
    if key not in _filled:
        name = unique("filled").replace("_", "-")
        asyncio.run(create_topics([name]))
        run(
            ghstream(
                "ingest",
                "--archive",
                archive,
                "--topic",
                name,
                "--bootstrap-servers",
                BOOTSTRAP,
                "--json",
            )
        )
        stored = asyncio.run(topic_size(name))
        if stored != events:
            raise AssertionError(f"{name} holds {stored} messages, expected {events}")
        _filled[key] = name
    return _filled[key]


def cleanup_filled() -> None:
    if _filled:
        asyncio.run(delete_topics(list(_filled.values())))
        _filled.clear()


async def count_events(dsn: str) -> int:
    """Rows in ``events``; 0 while the consumer has not created the table yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError):
        return 0
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


@dataclass
class StoreTiming:
    """A consumer process watched from PostgreSQL: its steady rate, wall time and peak RSS."""

    rate: float
    wall_s: float
    max_rss_mb: float
    stdout: str


async def watch_store(
    cmd: Sequence[str | os.PathLike[str]],
    dsn: str,
    expected: int,
    *,
    poll_s: float = 0.25,
    timeout_s: float = 1800.0,
) -> StoreTiming:
    """Run a consumer and poll ``events`` until it holds ``expected`` rows.

    The rate is taken between the first rows appearing and the last: the same
    clock for ghstream and the naive peer, whatever their start-up costs.
    """
    OUT.mkdir(parents=True, exist_ok=True)
    out_path, err_path = OUT / f"{uuid.uuid4().hex[:8]}.out", OUT / f"{uuid.uuid4().hex[:8]}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        # Popen and wait4(WNOHANG) do not block the loop that polls PostgreSQL.
        process = subprocess.Popen(  # noqa: ASYNC220
            [str(part) for part in cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, "NO_COLOR": "1"},
        )
        sampler = TreeRss(process.pid)
        first: tuple[float, int] | None = None
        while True:
            count = await count_events(dsn)
            now = time.perf_counter()
            if count and first is None:
                first = (now, count)
            if count >= expected:
                break
            pid, status, _ = os.wait4(process.pid, os.WNOHANG)  # noqa: ASYNC222
            if pid or now - started > timeout_s:
                if not pid:
                    process.kill()
                    _, status, _ = os.wait4(process.pid, 0)  # noqa: ASYNC222
                sampler.stop()
                process.returncode = os.waitstatus_to_exitcode(status)
                raise RuntimeError(
                    f"{cmd[0]} stored {count} of {expected} events:\n"
                    + err_path.read_text(errors="replace")[-3000:]
                )
            await asyncio.sleep(poll_s)
        last = now
        _, status, _ = await asyncio.to_thread(os.wait4, process.pid, 0)
        sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    out_path.unlink()
    err_path.unlink()
    if process.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {process.returncode}:\n{stderr[-3000:]}")
    assert first is not None
    span = max(last - first[0], poll_s)
    return StoreTiming(
        (expected - first[1]) / span if expected > first[1] else expected / span,
        wall,
        sampler.peak_mb,
        stdout,
    )
