"""EventPublisher's batching against a stand-in for aiokafka's producer: nothing lost, in order.

The stand-in decodes every batch it is handed with aiokafka's own reader; the
real broker round trips are in tests/integration/test_ingest_kafka.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch

from ghstream.batches import murmur2
from ghstream.kafka import EventPublisher


class FakeProducer:
    """Accepts batches like ``AIOKafkaProducer.send_batch``; confirms each after ``delay_s``."""

    def __init__(self, partitions: int, delay_s: float = 0.0) -> None:
        self.partitions = set(range(partitions))
        self.delay_s = delay_s
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes]]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[None]:
        batch._set_producer_state(1, 0, len(self.sent))
        read = DefaultRecordBatch(bytearray(batch._build()))
        assert read.validate_crc()
        self.sent.append((topic, partition, [(r.key, r.value) for r in read]))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay_s, done.set_result, None)
        return done


def publisher(fake: FakeProducer, **kwargs: Any) -> EventPublisher:
    pub = EventPublisher("127.0.0.1:1", "t", **kwargs)
    pub._producer._closed = True  # never started: nothing to close
    pub._producer = fake  # type: ignore[assignment]
    return pub


def key_on(partition: int, partitions: int) -> bytes:
    return next(
        key
        for key in (str(n).encode() for n in range(1000))
        if (murmur2(key) & 0x7FFFFFFF) % partitions == partition
    )


def values_sent(fake: FakeProducer) -> list[bytes]:
    return [value for _, _, records in fake.sent for _, value in records]


async def test_unkeyed_records_moving_on_keep_the_keyed_batch_they_meet() -> None:
    fake = FakeProducer(partitions=3)
    keyed = key_on(1, 3)
    async with publisher(fake, max_batch_bytes=400) as pub:
        await pub.publish_encoded_many([(keyed, b"keyed-%d" % n) for n in range(3)])
        # Unkeyed records fill partition 0's batch, then move on to partition 1.
        await pub.publish_encoded_many([(None, b"unkeyed-%02d" % n + b"x" * 40) for n in range(12)])
    sent = values_sent(fake)
    assert sorted(sent) == sorted(
        [b"keyed-%d" % n for n in range(3)] + [b"unkeyed-%02d" % n + b"x" * 40 for n in range(12)]
    )
    assert pub.published == 15
    assert pub.failed == 0
    # The keyed records reached partition 1, in order.
    keyed_sent = [(p, v) for _, p, records in fake.sent for k, v in records if k == keyed]
    assert keyed_sent == [(1, b"keyed-%d" % n) for n in range(3)]


async def test_flush_waits_for_a_batch_that_is_waiting_for_room() -> None:
    fake = FakeProducer(partitions=4, delay_s=0.05)
    async with publisher(fake, max_pending_batches=1, linger_ms=1) as pub:
        await pub.publish_encoded_many([(key_on(p, 4), b"v%d" % p) for p in range(4)])
        # The linger loop now seals all four batches, one at a time for want of room.
        await asyncio.sleep(0.01)
    assert sorted(values_sent(fake)) == [b"v0", b"v1", b"v2", b"v3"]
    assert pub.published == 4
    assert pub.failed == 0


async def test_what_was_never_sent_counts_as_failed() -> None:
    fake = FakeProducer(partitions=2)
    pub = publisher(fake)
    await pub.start()
    await pub.publish_encoded_many([(key_on(0, 2), b"a"), (key_on(1, 2), b"b")])
    await pub.stop()  # without flush: both batches are still open
    assert fake.sent == []
    assert pub.published == 0
    assert pub.failed == 2
