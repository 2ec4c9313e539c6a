"""The consumer against real services: dead letters, store outages, start-up errors, shutdown.

Store outages are simulated with :class:`PausableProxy`, a TCP proxy on
loopback between the consumer and PostgreSQL or MongoDB. Pausing it aborts
every open connection and closes the listening socket, so the consumer sees
exactly what a stopped server looks like from the network (connection reset,
then connection refused) while the shared servers other tests use keep running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pipeline_expected import (
    HOURS,
    consume_args,
    finish,
    ingest_archive,
    mongo_ids,
    reference_snapshot,
    snapshot,
    start_process,
    tail,
    wait_until,
)

from ghstream import wire
from ghstream.consume import ConsumerOptions, run_consumer
from ghstream.model import normalize

pytestmark = pytest.mark.integration


class PausableProxy:
    """Forwards 127.0.0.1:port to a target; ``pause()`` makes the target unreachable."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def pause(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host, int(port or default_port)


async def _tables(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return await snapshot(conn)
    finally:
        await conn.close()


async def _count(dsn: str, table: str = "events") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def _options(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name, **more):
    return ConsumerOptions(
        bootstrap=kafka_bootstrap, topic=topic, group=f"test-{uuid.uuid4().hex[:8]}",
        postgres_dsn=postgres_dsn, mongo_url=mongo_url, mongo_db=mongo_db_name,
        until_idle_s=1.5, status=False, retry_initial_s=0.2, retry_max_s=1.0, **more,
    )  # fmt: skip


@pytest.mark.shared_data
@pytest.mark.parametrize("store", ["postgres", "mongo"])
async def test_a_store_outage_pauses_the_consumer_and_loses_nothing(
    store, topic_factory, kafka_bootstrap, postgres_admin_dsn, postgres_dsn, mongo_url,
    mongo_db_name, shared_data, caplog,
) -> None:  # fmt: skip
    """1. Publish the 2015 hour. 2. Consume through a proxy to the store; once 1,500
    events are stored, cut the proxy (connections reset, then refused). 3. When the
    consumer has reported the store unavailable, restore it. Expected: the consumer
    retried, finished, and the tables equal a clean run's; every event once in MongoDB."""
    hour = [shared_data / "gharchive" / HOURS[2]]
    topic = await topic_factory(partitions=6)
    published = await ingest_archive(kafka_bootstrap, topic, hour)
    reference = await reference_snapshot(postgres_admin_dsn, hour)
    if store == "postgres":
        proxy = PausableProxy(*_host_port(postgres_dsn, 5432))
        base, _, database = postgres_dsn.rpartition("/")
        via = {"postgres_dsn": f"{base.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}/{database}"}
    else:
        proxy = PausableProxy(*_host_port(mongo_url, 27017))
        via = {"mongo_url": f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"}
    await proxy.start()
    options = _options(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name)
    for name, value in via.items():
        setattr(options, name, value)
    options.batch_max_records = 500

    with caplog.at_level(logging.WARNING, logger="ghstream.consume"):
        task = asyncio.create_task(run_consumer(options, asyncio.Event()))
        await wait_until(lambda: _count_or_done(postgres_dsn, 1500, task))
        await proxy.pause()

        def reported() -> bool:
            return any("unavailable" in r.getMessage() for r in caplog.records)

        await wait_until(lambda: _true_or_done(reported, task))
        await proxy.start()
        summary = await asyncio.wait_for(task, timeout=240)

    await proxy.pause()
    ids = await mongo_ids(mongo_url, mongo_db_name)
    assert summary.store_retries > 0
    assert len(ids) == len(set(ids)) == published
    assert await _tables(postgres_dsn) == reference


async def _count_or_done(dsn: str, threshold: int, task: asyncio.Task) -> bool:
    if task.done():
        task.result()
        raise AssertionError("the consumer finished before the outage")
    return await _count(dsn) >= threshold


async def _true_or_done(check, task: asyncio.Task) -> bool:
    if task.done():
        task.result()
        raise AssertionError("the consumer finished during the outage")
    return bool(check())


async def test_undecodable_messages_go_to_the_dlq_and_the_rest_is_stored(
    topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name
) -> None:
    """1. Put good envelopes, a gap notice and five undecodable messages (one an envelope
    whose event has a wrongly typed field) in one partition.
    2. Consume. Expected: the bad ones are in TOPIC.dlq, unchanged, with their reason
    and source; every good event and the gap are stored; offsets pass them all."""
    topic = await topic_factory(partitions=1)
    good = [
        {"id": str(n), "type": "WatchEvent", "created_at": "2015-01-01T12:00:00Z",
         "actor": {"login": f"user{n}"}, "repo": {"id": n, "name": f"o/r{n}"},
         "payload": {"action": "started"}}
        for n in range(1, 6)
    ]  # fmt: skip
    poison = json.loads(wire.encode_event(normalize(good[0]), good[0]))
    poison["event"]["actor_id"] = "abc"  # an envelope in shape, a wrongly typed field
    bad = [b"not json", b"[1, 2]", json.dumps({"v": 99, "kind": "event"}).encode(), b""]
    bad.append(json.dumps(poison).encode())
    gap = wire.encode_gap("events", datetime(2026, 1, 1, tzinfo=UTC), 7, gap_id="gap-1")
    values = [wire.encode_event(normalize(good[0]), good[0]), bad[0], bad[1]]
    values += [wire.encode_event(normalize(raw), raw) for raw in good[1:3]] + [bad[2], gap]
    values += [bad[3]] + [wire.encode_event(normalize(raw), raw) for raw in good[3:]] + [bad[4]]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()

    options = _options(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name)
    summary = await run_consumer(options, asyncio.Event())
    dead = await _read_all(kafka_bootstrap, f"{topic}.dlq", len(bad))

    assert summary.dead_lettered == len(bad)
    assert summary.stored == len(good)
    assert summary.committed == {0: len(values)}
    assert await _count(postgres_dsn) == len(good)
    assert await _count(postgres_dsn, "ingest_gaps") == 1
    assert sorted(await mongo_ids(mongo_url, mongo_db_name)) == sorted(r["id"] for r in good)
    assert [message.value or b"" for message in dead] == bad
    headers = [dict(message.headers) for message in dead]
    assert headers[0]["ghstream-reason"].startswith(b"not JSON")
    assert b"version 99" in headers[2]["ghstream-reason"]
    assert headers[3]["ghstream-reason"] == b"empty message"
    assert b"actor_id must be int" in headers[4]["ghstream-reason"]
    assert headers[1]["ghstream-source"] == f"{topic}[0]@2".encode()


async def _read_all(bootstrap: str, topic: str, count: int) -> list:
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    messages: list = []
    try:
        async with asyncio.timeout(60):
            while len(messages) < count:
                batch = await reader.getmany(timeout_ms=500)
                messages += [m for part in batch.values() for m in part]
    finally:
        await reader.stop()
    return sorted(messages, key=lambda m: m.offset)


@pytest.mark.shared_data
async def test_sigterm_stores_and_commits_the_batch_in_hand(
    topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, shared_data,
    tmp_path,
) -> None:  # fmt: skip
    """1. Publish the 2015 hour. 2. Start `ghstream consume`; once events are stored, send
    SIGTERM. Expected: exit 0, and the group's committed offsets cover exactly the events
    PostgreSQL and MongoDB hold (nothing stored uncommitted, nothing committed unstored)."""
    topic = await topic_factory(partitions=6)
    await ingest_archive(kafka_bootstrap, topic, [shared_data / "gharchive" / HOURS[2]])
    group = f"test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "consume.log"
    process = await start_process(
        consume_args(
            bootstrap=kafka_bootstrap, topic=topic, group=group, postgres_dsn=postgres_dsn,
            mongo_url=mongo_url, mongo_db=mongo_db_name, extra=["--batch-size", "500", "--json"],
        ),
        log,
    )  # fmt: skip
    try:
        await wait_until(lambda: _at_least(postgres_dsn, 1000))
        process.send_signal(signal.SIGTERM)
        code, out = await finish(process, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    committed = await _committed_total(kafka_bootstrap, group)
    assert code == 0, tail(log)
    assert json.loads(out)["consume"]["stopped_by"] == "stop"
    assert committed == await _count(postgres_dsn) == len(await mongo_ids(mongo_url, mongo_db_name))


async def _at_least(dsn: str, threshold: int) -> bool:
    return await _count(dsn) >= threshold


async def _committed_total(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


def _closed_port() -> int:
    return _free_port()


@pytest.mark.parametrize("store", ["postgres", "mongo", "kafka"])
async def test_an_unreachable_service_at_start_exits_3_naming_the_flag(
    store, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, tmp_path
) -> None:
    """Expected: exit 3, a message naming the flag and variable to fix, no password."""
    port = _closed_port()
    args = {
        "bootstrap": kafka_bootstrap, "topic": "unused", "group": "unused",
        "postgres_dsn": postgres_dsn, "mongo_url": mongo_url, "mongo_db": mongo_db_name,
    }  # fmt: skip
    flag = {
        "postgres": ("postgres_dsn", f"postgresql://ghstream:s3cret@127.0.0.1:{port}/x",
                     "--postgres-dsn", "GHSTREAM_POSTGRES_DSN"),
        "mongo": ("mongo_url", f"mongodb://ghstream:s3cret@127.0.0.1:{port}",
                  "--mongo-url", "GHSTREAM_MONGO_URL"),
        "kafka": ("bootstrap", f"127.0.0.1:{port}",
                  "--bootstrap-servers", "GHSTREAM_KAFKA_BOOTSTRAP"),
    }[store]  # fmt: skip
    args[flag[0]] = flag[1]
    log = tmp_path / "consume.log"

    code, out = await finish(await start_process(consume_args(**args), log), log, timeout_s=90)

    message = tail(log)
    assert code == 3, message
    assert "StartupError" in message
    assert flag[2] in message and flag[3] in message
    assert "s3cret" not in message + out
