"""The whole pipeline on the recorded GH Archive hours, with real processes, crashes and replays.

Each test publishes real hours with ``ghstream ingest`` and runs ``ghstream
consume`` as separate processes, then compares what PostgreSQL and MongoDB
hold with a count made independently from the raw files
(``pipeline_expected``) or with the tables of a clean run.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest
from pipeline_expected import (
    HOURS,
    PYTHON,
    consume_args,
    expected_from,
    finish,
    ingest_archive,
    mongo_ids,
    reference_snapshot,
    snapshot,
    start_process,
    stored_counts,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


@pytest.fixture
def hours(shared_data: Path) -> list[Path]:
    return [shared_data / "gharchive" / name for name in HOURS]


@pytest.fixture
def hour_2015(shared_data: Path) -> list[Path]:
    return [shared_data / "gharchive" / HOURS[2]]


@pytest.fixture
async def consumer(kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, tmp_path):
    """Start ``ghstream consume`` processes on one topic and group; kills leftovers after."""
    processes: list[asyncio.subprocess.Process] = []

    class Consumer:
        log = tmp_path / "consume.log"
        group = f"test-{uuid.uuid4().hex[:8]}"
        topic = ""

        async def start(self, *extra: str) -> asyncio.subprocess.Process:
            args = consume_args(
                bootstrap=kafka_bootstrap, topic=self.topic, group=self.group,
                postgres_dsn=postgres_dsn, mongo_url=mongo_url, mongo_db=mongo_db_name,
                extra=extra,
            )  # fmt: skip
            process = await start_process(args, self.log)
            processes.append(process)
            return process

        async def run_until_idle(self, *extra: str) -> dict:
            process = await self.start("--until-idle", "2", "--json", *extra)
            code, out = await finish(process, self.log)
            assert code == 0, tail(self.log)
            return json.loads(out)["consume"]

    yield Consumer()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _tables(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return await snapshot(conn)
    finally:
        await conn.close()


async def _stored_events(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


async def test_ingest_then_consume_stores_every_event_once_and_counts_match_the_files(
    consumer, topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, hours,
    tmp_path,
) -> None:  # fmt: skip
    """1. `ghstream ingest --archive` the three hours. 2. `ghstream consume --until-idle`.
    Expected: MongoDB holds each event once; PostgreSQL's per type/minute, per repository
    and per actor counts equal those counted from the raw files. 3. Replay the topic
    (`--from-beginning`). Expected: every table exactly as before."""
    consumer.topic = await topic_factory(partitions=6)
    expected = expected_from(hours)
    ingest = await start_process(
        [PYTHON, "-m", "ghstream", "ingest", "--bootstrap-servers", kafka_bootstrap,
         "--topic", consumer.topic, *(arg for path in hours for arg in ("--archive", str(path)))],
        tmp_path / "ingest.log",
    )  # fmt: skip
    code, _ = await finish(ingest, tmp_path / "ingest.log")
    assert code == 0, tail(tmp_path / "ingest.log")

    summary = await consumer.run_until_idle()

    ids = await mongo_ids(mongo_url, mongo_db_name)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        stored = await stored_counts(conn)
        before = await snapshot(conn)
    finally:
        await conn.close()
    assert summary["stored"] == expected.events
    assert len(ids) == len(set(ids)) == expected.events
    assert stored.events == expected.events
    assert stored.per_type == expected.per_type
    assert stored.per_type_minute == expected.per_type_minute
    assert stored.per_repo == expected.per_repo
    assert stored.repo_commits == expected.repo_commits
    assert stored.per_actor == expected.per_actor

    replay = await consumer.run_until_idle("--from-beginning")

    assert replay["stored"] == 0
    assert replay["duplicates"] == replay["consumed"] == summary["consumed"]
    assert await _tables(postgres_dsn) == before
    assert len(await mongo_ids(mongo_url, mongo_db_name)) == expected.events


async def test_consumer_killed_at_several_points_ends_like_a_clean_run(
    consumer, topic_factory, kafka_bootstrap, postgres_admin_dsn, postgres_dsn, mongo_url,
    mongo_db_name, hour_2015,
) -> None:  # fmt: skip
    """1. Publish the 2015 hour. 2. Start a consumer (small batches) and SIGKILL it once
    PostgreSQL holds 1,000, then 3,500, then 6,000 events; a new process each time.
    3. Let a last one drain the topic. Expected: tables identical to a clean run,
    every event once in MongoDB."""
    consumer.topic = await topic_factory(partitions=6)
    published = await ingest_archive(kafka_bootstrap, consumer.topic, hour_2015)
    reference = await reference_snapshot(postgres_admin_dsn, hour_2015)

    for stored_at_least in (1000, 3500, 6000):
        process = await consumer.start("--batch-size", "500")

        async def enough(threshold: int = stored_at_least) -> bool:
            try:
                return await _stored_events(postgres_dsn) >= threshold
            except asyncpg.UndefinedTableError:
                return False  # the first process has not migrated yet

        await wait_until(enough)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    summary = await consumer.run_until_idle()

    ids = await mongo_ids(mongo_url, mongo_db_name)
    assert summary["stopped_by"] == "idle"
    assert len(ids) == len(set(ids)) == published == len(reference["events"])
    assert await _tables(postgres_dsn) == reference


async def test_two_consumers_in_one_group_share_the_partitions(
    consumer, topic_factory, kafka_bootstrap, postgres_admin_dsn, postgres_dsn, mongo_url,
    mongo_db_name, hours,
) -> None:  # fmt: skip
    """1. Publish the three hours to a 6-partition topic. 2. Run two consumers of one
    group at once. Expected: both consumed; together they committed all 6 partitions;
    tables identical to a clean run; every event once in MongoDB."""
    consumer.topic = await topic_factory(partitions=6)
    await ingest_archive(kafka_bootstrap, consumer.topic, hours)
    reference = await reference_snapshot(postgres_admin_dsn, hours)

    # Small batches: the first member to join finishes the batch in hand before the group
    # rebalances, and with 5,000-event batches it could drain the other's three partitions
    # by then, leaving that one idle with nothing to consume.
    first, second = await asyncio.gather(
        consumer.run_until_idle("--batch-size", "500"),
        consumer.run_until_idle("--batch-size", "500"),
    )

    ids = await mongo_ids(mongo_url, mongo_db_name)
    assert first["consumed"] > 0 and second["consumed"] > 0
    assert set(first["committed"]) | set(second["committed"]) == {str(p) for p in range(6)}
    assert first["stored"] + second["stored"] == len(reference["events"])
    assert len(ids) == len(set(ids)) == len(reference["events"])
    assert await _tables(postgres_dsn) == reference
