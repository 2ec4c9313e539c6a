"""Live ingestion into real Kafka: the fake GitHub on loopback, the real EventPublisher.

What lands on the topic is read back with a plain consumer and compared with
what the fake server put inside a window: each event once, gap notices for
the feed that moved too fast, and nothing lost when the poller is stopped.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from fakegithub import FakeClock, FakeGitHub, Request, load_real_events
from ghstream import wire
from ghstream.github import PollerConfig, run_live
from ghstream.ingest import IngestOptions, run_ingest
from ghstream.kafka import EventPublisher

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

READ_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def real_events(shared_data: Path) -> list[dict[str, Any]]:
    return load_real_events(shared_data)


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(FakeClock()) as server:
        yield server


async def read_envelopes(bootstrap: str, topic: str) -> list[wire.Envelope]:
    """Every message on ``topic`` up to its end offsets, decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        envelopes = []
        async with asyncio.timeout(READ_TIMEOUT_S):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    envelopes.extend(wire.decode(record.value) for record in records)
        return envelopes
    finally:
        await consumer.stop()


def event_ids(envelopes: list[wire.Envelope]) -> Counter[str]:
    return Counter(e.event.id for e in envelopes if e.kind == wire.KIND_EVENT and e.event)


async def test_every_event_in_a_window_reaches_kafka_once_and_gaps_are_published(
    github: FakeGitHub,
    real_events: list[dict[str, Any]],
    kafka_bootstrap: str,
    topic_factory: Any,
) -> None:
    """A calm feed and one that outruns its window, polled for 200 s of fake time.

    Expected on the topic: each event that was inside a window exactly once,
    and one gap notice for the fast feed.
    """
    github.add_feed("events", real_events[:500], backlog=300, per_second=1.0)
    github.add_feed("repos/octo/fast/events", real_events[500:], backlog=300, per_second=12.0)
    topic = await topic_factory(partitions=3, replication_factor=1)
    stop = asyncio.Event()
    github.clock.call_at(100, stop.set)
    config = PollerConfig(
        api_url=github.api_url, feeds=("events", "repos/octo/fast/events"), tokens=("t",)
    )

    async with EventPublisher(kafka_bootstrap, topic) as publisher:
        summary = await run_live(config, publisher, stop, clock=github.clock)
        assert publisher.published == summary.new_events  # flushed before run_live returned

    expected = github.ids_in_some_window("events") | github.ids_in_some_window(
        "repos/octo/fast/events"
    )
    envelopes = await read_envelopes(kafka_bootstrap, topic)
    ids = event_ids(envelopes)
    assert set(ids) == expected
    assert max(ids.values()) == 1
    gaps = [e.gap for e in envelopes if e.kind == wire.KIND_GAP and e.gap]
    assert [gap["feed"] for gap in gaps] == ["repos/octo/fast/events"] == list(summary.gaps_by_feed)
    assert gaps[0]["estimated_missed"] == summary.estimated_missed > 0


async def test_a_stop_mid_window_loses_nothing_handed_to_the_producer(
    github: FakeGitHub,
    real_events: list[dict[str, Any]],
    kafka_bootstrap: str,
    topic_factory: Any,
) -> None:
    """1. Page 1 of a 300-event window is served. 2. Stop is set at that moment.

    Expected: the page's 100 events are confirmed by Kafka before run_live
    returns, and no further page was asked for.
    """
    github.add_feed("events", real_events, backlog=300)
    topic = await topic_factory(partitions=3, replication_factor=1)
    stop = asyncio.Event()
    github.on_request = set_on_first(stop)

    async with EventPublisher(kafka_bootstrap, topic) as publisher:
        summary = await run_live(
            PollerConfig(api_url=github.api_url, tokens=("t",)), publisher, stop, clock=github.clock
        )
        confirmed = publisher.published

    assert len(github.requests) == 1
    assert confirmed == summary.new_events == 100
    ids = event_ids(await read_envelopes(kafka_bootstrap, topic))
    assert set(ids) == set(github.requests[0].served_ids)


def set_on_first(stop: asyncio.Event) -> Callable[[Request], None]:
    def hook(request: Request) -> None:
        stop.set()

    return hook


async def test_ghstream_ingest_without_archive_runs_the_live_poller_once(
    github: FakeGitHub,
    real_events: list[dict[str, Any]],
    kafka_bootstrap: str,
    topic_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command's own wiring: --repo, --api-url, --once, a token from GITHUB_TOKEN."""
    github.add_feed("repos/octo/cat/events", real_events[:250], backlog=250)
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 36)
    topic = await topic_factory(partitions=3, replication_factor=1)
    options = IngestOptions(
        bootstrap=kafka_bootstrap,
        topic=topic,
        api_url=github.api_url,
        repos=("octo/cat",),
        once=True,
    )

    summary = await run_ingest(options, asyncio.Event())

    assert summary.errors == []
    assert summary.live.new_events == 250 == summary.published
    assert [r.token for r in github.requests] == ["ghp_" + "x" * 36] * 3
    ids = event_ids(await read_envelopes(kafka_bootstrap, topic))
    assert set(ids) == {str(e["id"]) for e in real_events[:250]}
