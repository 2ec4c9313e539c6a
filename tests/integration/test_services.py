"""The local services answer the way ghstream uses them, and scripts/services.py behaves.

Each test talks to a real server started by ``make services``: Kafka through aiokafka,
PostgreSQL through asyncpg, MongoDB (or its stand-in) through pymongo's async client.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES_SCRIPT = REPO_ROOT / "scripts" / "services.py"


async def test_kafka_produce_consume_and_commit(kafka_bootstrap: str, topic_factory: Any) -> None:
    """1. produce with acks=all, idempotence and zstd; 2. consume it; 3. commit and read back."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = await topic_factory(partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="zstd",
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"id": "1"}', key=b"repo-1")
    finally:
        await producer.stop()

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        assert (record.key, record.value, record.offset) == (b"repo-1", b'{"id": "1"}', sent.offset)
        partition = TopicPartition(topic, record.partition)
        await consumer.commit({partition: record.offset + 1})
        assert await consumer.committed(partition) == record.offset + 1
    finally:
        await consumer.stop()


async def test_kafka_topic_factory_creates_the_dead_letter_topic(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    topic = await topic_factory(partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics([topic, f"{topic}.dlq"])}
    finally:
        await admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {
        topic: 3,
        f"{topic}.dlq": 3,
    }


async def test_postgres_write_and_read(postgres_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE probe (id bigint PRIMARY KEY, login text NOT NULL)")
        await conn.execute("INSERT INTO probe VALUES ($1, $2)", 42, "octocat")
        row = await conn.fetchrow("SELECT id, login FROM probe")
        database = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert dict(row) == {"id": 42, "login": "octocat"}
    assert database.startswith("ghstream_test_")


async def test_mongo_insert_and_find(mongo_url: str, mongo_db_name: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        events = client[mongo_db_name]["events"]
        await events.insert_one({"_id": "2489651045", "type": "PushEvent"})
        found = await events.find_one({"_id": "2489651045"})
    finally:
        await client.close()
    assert found == {"_id": "2489651045", "type": "PushEvent"}


def run_services(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SERVICES_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_reports_every_service_as_json(kafka_bootstrap: str) -> None:
    result = run_services("status", "--json")
    rows = json.loads(result.stdout)
    assert {row["service"] for row in rows} >= {"kafka", "postgres", "mongo"}
    assert "ghstream:ghstream@" not in result.stdout, "the password must never be printed"


def test_up_refuses_a_port_held_by_something_else() -> None:
    """A plain TCP listener on Kafka's port: `up` exits 1 and names the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        name = f"porttest-{uuid.uuid4().hex[:6]}"
        result = run_services(
            "up", "--only", "kafka", "--name", name, "--kafka-port-base", str(port)
        )
    assert result.returncode == 1
    assert f"port {port} is taken by pid" in result.stderr
    assert "does not answer as a Kafka broker" in result.stderr
    assert not (REPO_ROOT / ".local" / "kafka" / name).exists()
