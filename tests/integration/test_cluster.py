"""The 3-broker test cluster replicates for real, and survives losing one broker.

The cluster is the session's own (``kafka_cluster`` in tests/integration/conftest.py),
on 29092/29094/29096: the single broker the other tests use is not involved.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


async def describe_partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # This client may ask a broker that has not yet learned of a topic just created.
        async with asyncio.timeout(30):
            while True:
                (described,) = await admin.describe_topics([topic])
                if described["error_code"] == 0 and described["partitions"]:
                    break
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    partitions: list[dict[str, Any]] = described["partitions"]
    return partitions


async def wait_for_full_isr(bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            partitions = await describe_partitions(bootstrap, topic)
            if all(len(p["isr"]) == 3 for p in partitions):
                return
            await asyncio.sleep(0.5)


async def test_topic_with_replication_factor_3_has_3_in_sync_replicas(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    topic = await topic_factory(
        partitions=6, replication_factor=3, bootstrap=kafka_cluster.bootstrap
    )

    partitions = await describe_partitions(kafka_cluster.bootstrap, topic)

    assert len(partitions) == 6
    for partition in partitions:
        assert sorted(partition["replicas"]) == [1, 2, 3], partition
        assert sorted(partition["isr"]) == [1, 2, 3], partition


async def test_acks_all_still_succeeds_with_one_broker_killed(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """1. SIGKILL broker 3; 2. produce with acks=all: min.insync.replicas is 2, so it succeeds;
    3. start broker 3 again: every partition gets its third in-sync replica back."""
    from aiokafka import AIOKafkaProducer

    topic = await topic_factory(
        partitions=3, replication_factor=3, bootstrap=kafka_cluster.bootstrap
    )
    await wait_for_full_isr(kafka_cluster.bootstrap, topic)

    kafka_cluster.kill_broker(3)
    assert kafka_cluster.pid(3) is None
    try:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_cluster.bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(topic, f"event-{i}".encode(), partition=i % 3)
                for i in range(6)
            ]
        finally:
            await producer.stop()
        assert [record.partition for record in sent] == [0, 1, 2, 0, 1, 2]
    finally:
        kafka_cluster.start_broker(3)

    await kafka_cluster.wait_for_brokers()
    await wait_for_full_isr(kafka_cluster.bootstrap, topic, timeout_s=90)
