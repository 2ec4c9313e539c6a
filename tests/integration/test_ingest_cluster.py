"""A backfill survives losing a broker of the 3-broker cluster (replication factor 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ingest_kafka import assert_per_key_order, partition_leaders, read_topic

from ghstream import wire
from ghstream.ingest import IngestOptions, Progress, run_ingest

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

EVENTS = 60_000
KILL_AFTER = 8_000


def write_backfill(path: Path) -> list[tuple[bytes, str]]:
    """``EVENTS`` push events over 300 repositories; returns (key, id) in file order."""
    produced = []
    with path.open("wb") as out:
        for n in range(EVENTS):
            repo = n % 300
            raw = {
                "id": str(n),
                "type": "PushEvent",
                "actor": {"id": n % 97, "login": f"user{n % 97}"},
                "repo": {"id": 1000 + repo, "name": f"org/repo{repo}"},
                "payload": {"size": 1, "distinct_size": 1, "commits": [{"sha": f"{n:040x}"}]},
                "created_at": "2015-01-01T12:00:00Z",
            }
            out.write(orjson.dumps(raw) + b"\n")
            produced.append((str(1000 + repo).encode(), str(n)))
    return produced


async def test_backfill_finishes_when_a_broker_is_killed(
    kafka_cluster: Any, topic_factory: Any, tmp_path: Path
) -> None:
    """1. start a backfill into a topic with RF 3; 2. once it is under way, SIGKILL the
    leader of partition 0; 3. the backfill finishes with nothing failed; 4. every event
    is in the topic exactly once, each repository's events in order."""
    bootstrap = kafka_cluster.bootstrap
    topic = await topic_factory(6, 3, bootstrap=bootstrap)
    produced = write_backfill(tmp_path / "backfill.ndjson")
    victim = (await partition_leaders(bootstrap, topic))[0]

    under_way = asyncio.Event()

    def on_progress(progress: Progress) -> None:
        if progress.published_or_queued >= KILL_AFTER:
            under_way.set()

    options = IngestOptions(
        bootstrap=bootstrap,
        topic=topic,
        partitions=6,
        replication_factor=3,
        archive=(str(tmp_path / "backfill.ndjson"),),
    )
    backfill = asyncio.create_task(run_ingest(options, asyncio.Event(), on_progress=on_progress))
    try:
        await asyncio.wait_for(under_way.wait(), timeout=120)
        assert not backfill.done(), "the backfill must still be running when the broker dies"
        await asyncio.to_thread(kafka_cluster.kill_broker, victim)
        summary = await asyncio.wait_for(backfill, timeout=240)
    finally:
        backfill.cancel()
        kafka_cluster.start_broker(victim)

    assert summary.errors == []
    assert (summary.published, summary.failed) == (EVENTS, 0)

    records = await read_topic(bootstrap, topic, timeout_s=120)
    ids = [wire.decode(r.value).event.id for r in records]  # type: ignore[union-attr]
    assert len(ids) == EVENTS
    assert set(ids) == {event_id for _, event_id in produced}
    assert_per_key_order(records, produced)
    await kafka_cluster.wait_for_brokers()
