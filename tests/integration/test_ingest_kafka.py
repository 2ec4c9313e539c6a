"""Ingest into the real local Kafka: round trip, per-key order, dead letters, large events."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from ghstream import wire
from ghstream.ingest import IngestOptions, run_ingest
from ghstream.kafka import MAX_MESSAGE_BYTES, EventPublisher, ensure_topic
from ghstream.model import normalize

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "archive"


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> list[Any]:
    """Every record in ``topic``, partition by partition in offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES * 2,
        fetch_max_bytes=MAX_MESSAGE_BYTES * 4,
    )
    await consumer.start()
    try:
        numbers = await partition_numbers(bootstrap, topic)
        partitions = [TopicPartition(topic, number) for number in numbers]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(timeout_s):
            while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def partition_numbers(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def partition_leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition number -> node id of its leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return {p["partition"]: p["leader"] for p in described["partitions"]}
    finally:
        await admin.close()


def assert_per_key_order(records: list[Any], produced_ids: list[tuple[bytes | None, str]]) -> None:
    """For each key, the ids come back in the order they were produced."""
    expected: dict[bytes | None, list[str]] = defaultdict(list)
    for key, event_id in produced_ids:
        if key is not None:
            expected[key].append(event_id)
    got: dict[bytes | None, list[str]] = defaultdict(list)
    for record in records:
        if record.key is not None:
            envelope = wire.decode(record.value)
            assert envelope.event is not None
            got[record.key].append(envelope.event.id)
    assert got == expected


@pytest.mark.shared_data
async def test_round_trip_every_id_once_in_per_repository_order(
    kafka_bootstrap: str, topic_factory: Any, shared_data: Path
) -> None:
    topic = await topic_factory(6, 1)
    hour = shared_data / "gharchive" / "2015-01-01-12.json.gz"
    options = IngestOptions(bootstrap=kafka_bootstrap, topic=topic, archive=(str(hour),))

    summary = await run_ingest(options, asyncio.Event())

    import gzip

    with gzip.open(hour, "rb") as lines:
        produced = [normalize(orjson.loads(line)) for line in lines]
    assert summary.published == len(produced) == 8273
    assert summary.errors == []

    records = await read_topic(kafka_bootstrap, topic)
    ids = [wire.decode(r.value).event.id for r in records]  # type: ignore[union-attr]
    assert sorted(ids) == sorted(e.id for e in produced)
    assert len(set(ids)) == len(ids)
    assert_per_key_order(records, [(wire.event_key(e), e.id) for e in produced])
    assert all(r.key == str(wire.decode(r.value).event.repo_id).encode() for r in records)  # type: ignore[union-attr]
    # The partition of a key is the Java client's, so other producers agree on it.
    assert all(r.partition == (aiokafka_murmur2(r.key) & 0x7FFFFFFF) % 6 for r in records)
    assert await read_topic(kafka_bootstrap, f"{topic}.dlq") == []


async def test_bad_lines_go_to_the_dead_letter_topic(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = await topic_factory(3, 1)
    source = str(FIXTURES / "bad_lines.ndjson")
    options = IngestOptions(bootstrap=kafka_bootstrap, topic=topic, archive=(source,))

    summary = await run_ingest(options, asyncio.Event())

    assert (summary.published, summary.bad, summary.dead_lettered) == (7, 5, 5)
    events = await read_topic(kafka_bootstrap, topic)
    assert sorted(wire.decode(r.value).event.id for r in events) == list("1235679")  # type: ignore[union-attr]
    dead = await read_topic(kafka_bootstrap, f"{topic}.dlq")
    headers = [dict(r.headers) for r in dead]
    assert sorted(int(h["ghstream-line"]) for h in headers) == [2, 4, 7, 9, 10]
    assert {h["ghstream-source"].decode() for h in headers} == {source}
    by_line = {int(h["ghstream-line"]): (h, r.value) for h, r in zip(headers, dead, strict=True)}
    reason, payload = by_line[2][0]["ghstream-reason"], by_line[2][1]
    assert reason.startswith(b"not JSON")
    assert payload == b"this line is not JSON at all"


async def test_an_event_larger_than_a_message_is_trimmed_not_lost(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = await topic_factory(1, 1)
    raw = {
        "id": "77",
        "type": "IssuesEvent",
        "actor": {"id": 1, "login": "a"},
        "repo": {"id": 2, "name": "o/r"},
        "payload": {"action": "opened", "issue": {"number": 3, "body": "x" * (12 << 20)}},
        "created_at": "2024-01-01T00:00:00Z",
    }
    event = normalize(raw)
    async with EventPublisher(kafka_bootstrap, topic) as publisher:
        await publisher.publish(event, orjson.dumps(raw))
    assert (publisher.published, publisher.trimmed, publisher.failed) == (1, 1, 0)

    (record,) = await read_topic(kafka_bootstrap, topic)
    envelope = wire.decode(record.value)
    assert envelope.raw_trimmed
    assert envelope.event == event
    assert envelope.raw is not None
    assert envelope.raw["payload"]["issue"]["body"].startswith("[trimmed by ghstream")
    assert len(record.value) < MAX_MESSAGE_BYTES


async def test_ensure_topic_creates_both_topics_and_is_idempotent(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    topic = f"test-ensure-{request.node.name[-20:].strip('[]')}-{id(request) % 100000}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await ensure_topic(kafka_bootstrap, topic, partitions=4)
        await ensure_topic(kafka_bootstrap, topic, partitions=4)
        described = {t["topic"]: t for t in await admin.describe_topics([topic, f"{topic}.dlq"])}
        assert {name: len(t["partitions"]) for name, t in described.items()} == {
            topic: 4,
            f"{topic}.dlq": 4,
        }
    finally:
        await admin.delete_topics([topic, f"{topic}.dlq"])
        await admin.close()


async def test_replication_factor_beyond_the_brokers_names_the_flag(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    from ghstream.errors import ConfigError

    with pytest.raises(ConfigError, match="--replication-factor 3"):
        await ensure_topic(kafka_bootstrap, f"test-rf-{id(request)}", replication_factor=3)


async def test_gap_notices_are_published(kafka_bootstrap: str, topic_factory: Any) -> None:
    from datetime import UTC, datetime

    topic = await topic_factory(2, 1)
    detected = datetime(2025, 1, 1, tzinfo=UTC)
    async with EventPublisher(kafka_bootstrap, topic) as publisher:
        await publisher.publish_gap(feed="events", detected_at=detected, estimated_missed=40)
    assert publisher.gaps_published == 1
    (record,) = await read_topic(kafka_bootstrap, topic)
    envelope = wire.decode(record.value)
    assert envelope.kind == "gap"
    assert envelope.gap is not None and envelope.gap["estimated_missed"] == 40
