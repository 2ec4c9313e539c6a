"""`ghstream aggregate`: incremental runs, late events and --full agree; a rerun changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from test_top_archive import aggregate, read_hour, store

from ghstream.analytics import TABLES

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


async def snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: [
                tuple(row) for row in await conn.fetch(f"SELECT * FROM {table} AS t ORDER BY t")
            ]
            for table in TABLES
        }
    finally:
        await conn.close()


async def test_incremental_runs_with_late_events_equal_a_full_rebuild(
    postgres_dsn: str, shared_data: Path
) -> None:
    """1. store every other event of a real hour, aggregate;
    2. store the rest (each one late: older than events already aggregated), aggregate;
    3. the tables equal a --full rebuild, and a third run changes nothing.
    """
    raws = read_hour(shared_data / "gharchive" / "2015-01-01-12.json.gz")
    await store(postgres_dsn, raws[::2])
    first = await aggregate(postgres_dsn)
    await store(postgres_dsn, raws[1::2])
    second = await aggregate(postgres_dsn)
    incremental = await snapshot(postgres_dsn)

    third = await aggregate(postgres_dsn)
    assert await snapshot(postgres_dsn) == incremental
    rebuilt = await aggregate(postgres_dsn, full=True)
    full = await snapshot(postgres_dsn)

    assert first.new_events == len(raws[::2])
    assert second.new_events == len(raws[1::2])
    assert third.new_events == 0
    assert rebuilt.full and rebuilt.new_events == len(raws)
    assert all(full[table] for table in TABLES)
    assert incremental == full


async def test_day_rollups_equal_the_hourly_aggregates(
    postgres_dsn: str, shared_data: Path
) -> None:
    await store(postgres_dsn, read_hour(shared_data / "gharchive" / "2013-02-15-0.json.gz"))
    await aggregate(postgres_dsn)

    conn = await asyncpg.connect(postgres_dsn)
    try:
        hourly = await conn.fetchval("SELECT sum(events) FROM agg_repo_hour")
        daily = await conn.fetchval("SELECT sum(events) FROM agg_repo_day")
        actors = await conn.fetchval("SELECT sum(contributions) FROM agg_actor_week")
        contributions = await conn.fetchval(
            "SELECT sum(pushes + prs_opened + issues_opened + reviews + review_comments"
            " + issue_comments + commit_comments) FROM agg_actor_hour"
        )
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT (date_trunc('day', created_at, 'UTC'), repo_key, actor_login))"
            " FROM events WHERE repo_key IS NOT NULL AND actor_login IS NOT NULL"
        )
        summed = await conn.fetchval("SELECT sum(actors) FROM agg_repo_day")
    finally:
        await conn.close()

    assert daily == hourly
    assert actors == contributions
    assert summed == distinct
