"""The sinks against real PostgreSQL and MongoDB: exact counts, idempotence, concurrency."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest
from pipeline_expected import HOURS, expected_from, read_raw, snapshot, stored_counts

from ghstream.migrate import apply_migrations
from ghstream.model import Event, normalize
from ghstream.sinks import StoreUnavailable
from ghstream.sinks.mongo import MongoSink
from ghstream.sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration


def _events(paths: Sequence[Path]) -> list[tuple[Event, dict]]:
    return [(normalize(raw), raw) for path in paths for raw in read_raw(path)]


async def _write_all(sink: PostgresSink, events: Sequence[Event], size: int = 1000) -> int:
    inserted = 0
    for start in range(0, len(events), size):
        inserted += (await sink.write_batch(events[start : start + size])).inserted
    return inserted


@pytest.fixture
async def pg(postgres_dsn: str):
    await apply_migrations(postgres_dsn)
    async with PostgresSink(postgres_dsn) as sink:
        yield sink


def _event(event_id: str, **overrides) -> dict:
    raw = {
        "id": event_id,
        "type": "PushEvent",
        "created_at": "2015-01-01T12:00:00Z",
        "actor": {"id": 1, "login": "octocat"},
        "repo": {"id": 7, "name": "octo/cat"},
        "payload": {"size": 2, "distinct_size": 1},
    }
    raw.update(overrides)
    return raw


@pytest.mark.shared_data
async def test_aggregates_equal_an_independent_count_of_the_archive_hours(
    pg: PostgresSink, shared_data: Path
) -> None:
    paths = [shared_data / "gharchive" / name for name in HOURS]
    events = [event for event, _ in _events(paths)]
    expected = expected_from(paths)

    inserted = await _write_all(pg, events)

    async with pg.pool.acquire() as conn:
        stored = await stored_counts(conn)
    assert inserted == expected.events
    assert stored.events == expected.events
    assert stored.per_type == expected.per_type
    assert stored.per_type_minute == expected.per_type_minute
    assert stored.per_repo == expected.per_repo
    assert stored.repo_pushes == expected.repo_pushes
    assert stored.repo_commits == expected.repo_commits
    assert stored.per_actor == expected.per_actor


@pytest.mark.shared_data
async def test_rewriting_batches_in_another_order_changes_nothing(
    pg: PostgresSink, shared_data: Path
) -> None:
    events = [event for event, _ in _events([shared_data / "gharchive" / HOURS[2]])]
    await _write_all(pg, events)
    async with pg.pool.acquire() as conn:
        before = await snapshot(conn)

    shuffled = events[:]
    random.Random(5).shuffle(shuffled)
    again = await _write_all(pg, shuffled, size=777)

    async with pg.pool.acquire() as conn:
        after = await snapshot(conn)
    assert again == 0
    assert after == before


@pytest.mark.shared_data
async def test_concurrent_writers_of_overlapping_batches_count_each_event_once(
    postgres_dsn: str, shared_data: Path
) -> None:
    """1. Write the 2015 hour alone for reference. 2. In a fresh schema, four sinks write
    it concurrently, each in another order. Expected: identical tables, no deadlock."""
    events = [event for event, _ in _events([shared_data / "gharchive" / HOURS[2]])]
    await apply_migrations(postgres_dsn)
    async with PostgresSink(postgres_dsn) as sink:
        await _write_all(sink, events)
        async with sink.pool.acquire() as conn:
            reference = await snapshot(conn)
            await conn.execute(
                "TRUNCATE events, repos, agg_type_minute, agg_repo_hour, agg_actor_hour"
            )

    async def writer(seed: int) -> int:
        order = events[:]
        random.Random(seed).shuffle(order)
        async with PostgresSink(postgres_dsn, pool_max=1) as sink:
            return await _write_all(sink, order, size=1500)

    inserted = await asyncio.gather(*(writer(seed) for seed in range(4)))

    async with PostgresSink(postgres_dsn) as sink, sink.pool.acquire() as conn:
        assert await snapshot(conn) == reference
    assert sum(inserted) == len(reference["events"])


async def test_repos_keep_the_newest_name_whatever_the_arrival_order(pg: PostgresSink) -> None:
    old = _event("1", created_at="2015-01-01T10:00:00Z", repo={"id": 7, "name": "octo/old"})
    new = _event("2", created_at="2015-01-01T11:00:00Z", repo={"id": 7, "name": "octo/new"})

    await pg.write_batch([normalize(new)])
    await pg.write_batch([normalize(old)])

    async with pg.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT repo_name, name_seen_at FROM repos WHERE repo_key = '7'")
    assert row["repo_name"] == "octo/new"


async def test_aggregate_definitions(pg: PostgresSink) -> None:
    raws = [
        _event("1"),  # push, 1 known commit
        _event("2", payload={"ref": "refs/heads/main"}),  # push, count unknown
        _event("3", type="PullRequestEvent", payload={"action": "opened"}),
        _event(
            "4",
            type="PullRequestEvent",
            payload={"action": "closed", "pull_request": {"merged": True}},
        ),
        _event(
            "5",
            type="PullRequestEvent",
            payload={"action": "closed", "pull_request": {"merged": False}},
        ),
        _event("6", type="IssuesEvent", payload={"action": "opened"}),
        _event("7", type="IssuesEvent", payload={"action": "closed"}),
        _event("8", type="WatchEvent", payload={"action": "started"}),
        _event("9", type="ForkEvent", payload={}),
        _event("10", type="ReleaseEvent", payload={"action": "published"}),
        _event("11", type="PullRequestReviewEvent", payload={"action": "created"}),
        _event("12", type="IssueCommentEvent", payload={"action": "created"}),
        _event("13", type="FollowEvent", repo=None, actor={"login": "dependabot[bot]"}),
        _event("14", type="GistEvent", actor=None),
    ]

    result = await pg.write_batch([normalize(raw) for raw in raws])

    async with pg.pool.acquire() as conn:
        repo = dict(await conn.fetchrow("SELECT * FROM agg_repo_hour"))
        actors = {
            r["actor_login"]: dict(r) for r in await conn.fetch("SELECT * FROM agg_actor_hour")
        }
        events = await conn.fetchval("SELECT count(*) FROM events")
    assert (result.inserted, result.duplicates, events) == (14, 0, 14)
    assert repo | {"bucket": None} == {
        "bucket": None,
        "repo_key": "7",
        "events": 13,
        "pushes": 2,
        "commits": 1,
        "pushes_unknown": 1,
        "prs_opened": 1,
        "prs_merged": 1,
        "prs_closed": 1,
        "issues_opened": 1,
        "issues_closed": 1,
        "stars": 1,
        "forks": 1,
        "releases": 1,
    }
    assert set(actors) == {"octocat", "dependabot[bot]"}
    assert actors["dependabot[bot]"]["is_bot"] is True
    octocat = actors["octocat"]
    assert (
        octocat["events"],
        octocat["pushes"],
        octocat["commits"],
        octocat["prs_opened"],
        octocat["reviews"],
        octocat["issue_comments"],
    ) == (12, 2, 1, 1, 1, 1)


async def test_nul_is_cleaned_for_postgres_and_kept_for_mongo(
    pg: PostgresSink, mongo_url: str, mongo_db_name: str
) -> None:
    raw = _event("42", type="ReleaseEvent", payload={"release": {"tag_name": "v1\u0000"}})
    event = normalize(raw)

    await pg.write_batch([event])
    async with MongoSink(mongo_url, mongo_db_name) as mongo:
        await mongo.write_batch([(event, raw)])
        doc = await mongo.collection.find_one({"_id": "42"})

    async with pg.pool.acquire() as conn:
        assert await conn.fetchval("SELECT release_tag FROM events WHERE id = '42'") == "v1"
    assert doc is not None
    assert doc["raw"]["payload"]["release"]["tag_name"] == "v1\u0000"


async def test_mongo_counts_redelivered_events_as_duplicates(
    mongo_url: str, mongo_db_name: str
) -> None:
    pairs = [(normalize(raw), raw) for raw in (_event("1"), _event("2"), _event("3"))]

    async with MongoSink(mongo_url, mongo_db_name) as mongo:
        first = await mongo.write_batch(pairs[:2])
        second = await mongo.write_batch([*pairs, pairs[0]])
        count = await mongo.collection.count_documents({})
        index_names = {index["name"] async for index in await mongo.collection.list_indexes()}

    assert (first.inserted, first.duplicates) == (2, 0)
    assert (second.inserted, second.duplicates) == (1, 3)
    assert count == 3
    assert {"created_at", "type", "repo_key", "actor_login"} <= index_names


async def test_concurrent_migration_runners_apply_each_migration_once(postgres_dsn: str) -> None:
    results = await asyncio.gather(*(apply_migrations(postgres_dsn) for _ in range(4)))

    applied = [name for names in results for name in names]
    assert applied.count("001_core.sql") == 1
    conn = await asyncpg.connect(postgres_dsn)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations")
    finally:
        await conn.close()
    assert [row["version"] for row in versions][:1] == [1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_stores_are_reported_as_unavailable() -> None:
    port = _closed_port()

    with pytest.raises(StoreUnavailable, match="PostgreSQL"):
        async with PostgresSink(f"postgresql://u:secret@127.0.0.1:{port}/x"):
            pass
    with pytest.raises(StoreUnavailable, match="MongoDB"):
        async with MongoSink(f"mongodb://127.0.0.1:{port}", "x", server_selection_timeout_ms=300):
            pass
    # pymongo's async client leaves the socket of a refused connection unclosed even after
    # client.close(); collect it here, or its ResourceWarning fails whichever test the
    # garbage collector happens to run in next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def test_an_event_bson_cannot_hold_is_kept_as_json_text(
    mongo_url: str, mongo_db_name: str
) -> None:
    """A raw value past 64 bits (valid JSON, not valid BSON) must not fail the batch."""
    huge = _event("9", payload={"size": 2**70})
    fine = _event("10")

    async with MongoSink(mongo_url, mongo_db_name, write_concurrency=1) as mongo:
        result = await mongo.write_batch([(normalize(huge), huge), (normalize(fine), fine)])
        doc = await mongo.collection.find_one({"_id": "9"})
        other = await mongo.collection.find_one({"_id": "10"})

    assert result.inserted == 2
    assert doc is not None and other is not None
    assert doc["raw"] is None
    assert '"size":1180591620717411303424' in doc["raw_json"]
    assert other["raw"] == fine
