"""The analytics definitions of README.md on small inputs written for each case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from test_top_archive import aggregate, store

from ghstream import queries
from ghstream.timewindow import Window

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 10, tzinfo=UTC)
WINDOW = Window(start=T0 - timedelta(days=30), end=T0 + timedelta(days=2))


def stamp(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(
    event_id: int,
    kind: str,
    minutes: float,
    *,
    login: str = "alice",
    repo: tuple[int, str] = (1, "octo/repo"),
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": str(event_id),
        "type": kind,
        "created_at": stamp(minutes),
        "actor": {"id": abs(hash(login)) % 10**6, "login": login},
        "repo": {"id": repo[0], "name": repo[1]},
        "payload": payload or {},
        "public": True,
    }


def push(event_id: int, minutes: float, *, login: str = "alice", size: int = 2) -> dict[str, Any]:
    return event(
        event_id, "PushEvent", minutes, login=login, payload={"size": size, "distinct_size": size}
    )


async def read(dsn: str, fetch: Any, **options: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await fetch(conn, WINDOW, **options)
    finally:
        await conn.close()


async def test_a_renamed_repository_is_one_repository_under_its_newest_name(
    postgres_dsn: str,
) -> None:
    await store(
        postgres_dsn,
        [
            event(
                1, "WatchEvent", 0, repo=(42, "old-owner/old-name"), payload={"action": "started"}
            ),
            event(2, "ForkEvent", 30, repo=(42, "new-owner/new-name")),
            event(3, "WatchEvent", 10, repo=(7, "other/repo"), payload={"action": "started"}),
        ],
    )

    report = await read(postgres_dsn, queries.top_repos)
    by_org = await read(postgres_dsn, queries.top_repos, org="NEW-OWNER")
    by_old_name = await read(postgres_dsn, queries.top_repos, repo="old-owner/old-name")

    assert [(r.repo, r.events, r.stars, r.forks) for r in report.rows] == [
        ("new-owner/new-name", 2, 1, 1),
        ("other/repo", 1, 1, 0),
    ]
    assert [r.repo for r in by_org.rows] == ["new-owner/new-name"]
    assert by_old_name.rows == []
    assert by_old_name.coverage.notes == ("no stored repository matches --repo old-owner/old-name",)


async def test_bots_and_ghost(postgres_dsn: str) -> None:
    await store(
        postgres_dsn,
        [
            push(1, 0, login="dependabot[bot]"),
            push(2, 1, login="dependabot[bot]"),
            push(3, 2, login="Renovate-Helper"),
            push(4, 3, login="ghost"),
            push(5, 4, login="ghost"),
            push(6, 5, login="ghost"),
            push(7, 6, login="alice"),
        ],
    )

    default = await read(postgres_dsn, queries.top_contributors, bots=["renovate-helper"])
    with_bots = await read(
        postgres_dsn, queries.top_contributors, include_bots=True, bots=["renovate-helper"]
    )

    assert [r.login for r in default.rows] == ["alice"]
    assert [(r.login, r.is_bot) for r in with_bots.rows] == [
        ("dependabot[bot]", True),
        ("Renovate-Helper", False),
        ("alice", False),
    ]
    assert default.coverage.events == 1  # bots' and ghost's events are not counted
    assert with_bots.coverage.events == 4  # ghost never is


async def test_reopened_pull_request_and_close_without_open(postgres_dsn: str) -> None:
    def pr(event_id: int, minutes: float, action: str, number: int, **pr: Any) -> dict[str, Any]:
        return event(
            event_id,
            "PullRequestEvent",
            minutes,
            payload={"action": action, "number": number, "pull_request": {"number": number, **pr}},
        )

    await store(
        postgres_dsn,
        [
            pr(1, 0, "opened", 1),
            pr(2, 10, "closed", 1, merged=False),
            pr(3, 20, "reopened", 1),
            pr(4, 60, "closed", 1, merged=True),
            # no open event: the close carries the item's own times
            pr(5, 100, "closed", 2, merged=False, created_at=stamp(-120), closed_at=stamp(99)),
            # trimmed 2025+ close: no merge flag, no times
            pr(6, 5, "opened", 3),
            pr(7, 50, "closed", 3),
        ],
    )
    await aggregate(postgres_dsn)

    report = await read(postgres_dsn, queries.resolution)

    overall = {r.kind: r for r in report.rows if r.repo is None}
    assert overall["pr_merged"].items == 1
    assert overall["pr_merged"].median_seconds == 60 * 60
    assert overall["pr_unmerged"].items == 1
    assert overall["pr_unmerged"].median_seconds == (120 + 99) * 60
    assert "issue" not in overall
    assert report.coverage.undetermined_items == 1
    assert report.coverage.events == 3


async def test_trimmed_pushes_are_unknown_commits_never_zero(postgres_dsn: str) -> None:
    trimmed = {
        "repository_id": 1,
        "push_id": 9,
        "ref": "refs/heads/main",
        "head": "a",
        "before": "b",
    }
    await store(
        postgres_dsn,
        [
            event(1, "PushEvent", 0, payload=trimmed),
            event(2, "PushEvent", 1, payload=trimmed),
            push(3, 2, size=3),
            event(4, "PushEvent", 3, repo=(2, "torvalds/linux"), login="torvalds", payload=trimmed),
        ],
    )

    commits = await read(postgres_dsn, queries.top_repos, by="commits")
    contributors = await read(postgres_dsn, queries.top_contributors)

    assert [(r.repo, r.commits, r.pushes, r.pushes_unknown) for r in commits.rows] == [
        ("octo/repo", 3, 3, 2),
        ("torvalds/linux", 0, 1, 1),
    ]
    assert commits.coverage.pushes_unknown == 3
    alice = next(r for r in contributors.rows if r.login == "alice")
    assert (alice.pushes, alice.commits, alice.pushes_unknown) == (3, 3, 2)


async def test_a_late_event_lands_in_its_own_hour(postgres_dsn: str) -> None:
    await store(postgres_dsn, [push(1, 0), push(2, 24 * 60)])
    await aggregate(postgres_dsn)
    first = await read(postgres_dsn, queries.frequency, per="hour")

    # stored after the aggregate ran, created a day before the newest event
    await store(postgres_dsn, [push(3, 5, login="bob")])
    result = await aggregate(postgres_dsn)
    later = await read(postgres_dsn, queries.frequency, per="hour")

    assert [(p.bucket, p.events) for p in first.rows] == [
        (T0, 1),
        (T0 + timedelta(days=1), 1),
    ]
    assert [(p.bucket, p.events) for p in later.rows] == [
        (T0, 2),
        (T0 + timedelta(days=1), 1),
    ]
    assert result.new_events == 1
    conn = await asyncpg.connect(postgres_dsn)
    try:
        day = await conn.fetchrow(
            "SELECT events, actors FROM agg_repo_day WHERE bucket = $1", T0.replace(hour=0)
        )
    finally:
        await conn.close()
    assert (day["events"], day["actors"]) == (2, 2)
