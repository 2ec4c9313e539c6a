"""The hourly-leaders rankings (ghstream.ranking) equal a plain GROUP BY, ties included.

Each test stores events through the consumer's sink, then compares
``queries.top_contributors`` / ``queries.top_repos`` with SQL written here that
sums every hour. ``k`` (leaders read per hour) is shrunk so that small inputs
exercise the bound, the retry and the full-scan fallback.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from test_top_archive import store

from ghstream import queries, ranking
from ghstream.timewindow import Window

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, tzinfo=UTC)
HOURS = 8
WINDOW = Window(start=T0, end=T0 + timedelta(hours=HOURS))

_CONTRIBUTIONS = (
    "pushes + prs_opened + issues_opened + reviews + review_comments + issue_comments"
    " + commit_comments"
)
PLAIN_CONTRIBUTORS = f"""
SELECT actor_login, sum({_CONTRIBUTIONS}) AS contributions, sum(events) AS events
FROM agg_actor_hour
WHERE bucket >= $1 AND bucket < $2 AND ($3 OR NOT is_bot) AND lower(actor_login) <> ALL($4)
GROUP BY actor_login
HAVING sum({_CONTRIBUTIONS}) > 0
ORDER BY contributions DESC, actor_login COLLATE "C"
LIMIT $5
"""
PLAIN_CONTRIBUTOR_EVENTS = """
SELECT count(*) AS events,
    count(*) FILTER (WHERE type = 'PushEvent' AND commits IS NULL) AS unknown
FROM events
WHERE created_at >= $1 AND created_at < $2 AND actor_login IS NOT NULL
    AND ($3 OR NOT actor_is_bot) AND lower(actor_login) <> ALL($4)
"""
PLAIN_REPOS = """
SELECT coalesce(r.repo_name, h.repo_key) AS repo, sum(h.{metric}) AS value
FROM agg_repo_hour AS h LEFT JOIN repos AS r USING (repo_key)
WHERE h.bucket >= $1 AND h.bucket < $2
GROUP BY h.repo_key, r.repo_name
HAVING sum(h.{eligible}) > 0
ORDER BY value DESC, coalesce(r.repo_name, h.repo_key) COLLATE "C", h.repo_key COLLATE "C"
LIMIT $3
"""
PLAIN_REPO_EVENTS = """
SELECT count(*) AS events,
    count(*) FILTER (WHERE type = 'PushEvent' AND commits IS NULL) AS unknown
FROM events WHERE created_at >= $1 AND created_at < $2 AND repo_key IS NOT NULL
"""


@pytest.fixture
def small_k(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the leaders read per hour to ``k`` whatever the limit."""

    def set_k(k: int) -> None:
        monkeypatch.setattr(ranking, "K_MIN", k)
        monkeypatch.setattr(ranking, "K_PER_ROW", 0)

    return set_k


def stamp(hour: int, second: int) -> str:
    return (T0 + timedelta(hours=hour, seconds=second)).isoformat().replace("+00:00", "Z")


class Events:
    """Raw events with fresh ids and distinct seconds."""

    def __init__(self) -> None:
        self.raws: list[dict[str, Any]] = []

    def add(
        self,
        hour: int,
        login: str,
        kind: str = "IssueCommentEvent",
        *,
        repo: tuple[int, str] = (1, "octo/repo"),
        payload: dict[str, Any] | None = None,
    ) -> None:
        n = len(self.raws)
        self.raws.append(
            {
                "id": str(1000 + n),
                "type": kind,
                "created_at": stamp(hour, n % 3600),
                "actor": {"id": abs(hash(login)) % 10**6, "login": login},
                "repo": {"id": repo[0], "name": repo[1]},
                "payload": payload or {"action": "created"},
                "public": True,
            }
        )


async def contributors(
    conn: Any, *, limit: int, include_bots: bool = False, bots: tuple[str, ...] = ()
) -> tuple[list[tuple[str, int, int]], tuple[int, int]]:
    report = await queries.top_contributors(
        conn, WINDOW, limit=limit, include_bots=include_bots, bots=bots
    )
    rows = [(row.login, row.contributions, row.events) for row in report.rows]
    return rows, (report.coverage.events, report.coverage.pushes_unknown or 0)


async def plain_contributors(
    conn: Any, *, limit: int, include_bots: bool = False, bots: tuple[str, ...] = ()
) -> tuple[list[tuple[str, int, int]], tuple[int, int]]:
    excluded = ["ghost"] if include_bots else ["ghost", *(login.lower() for login in bots)]
    args = (WINDOW.start, WINDOW.end, include_bots, excluded)
    rows = await conn.fetch(PLAIN_CONTRIBUTORS, *args, limit)
    totals = await conn.fetchrow(PLAIN_CONTRIBUTOR_EVENTS, *args)
    return [(r["actor_login"], r["contributions"], r["events"]) for r in rows], (
        totals["events"],
        totals["unknown"],
    )


async def repos(conn: Any, *, limit: int, by: str) -> tuple[list[tuple[str, int]], tuple[int, int]]:
    report = await queries.top_repos(conn, WINDOW, limit=limit, by=by)  # type: ignore[arg-type]
    rows = [(row.repo, getattr(row, by)) for row in report.rows]
    return rows, (report.coverage.events, report.coverage.pushes_unknown or 0)


async def plain_repos(
    conn: Any, *, limit: int, by: str
) -> tuple[list[tuple[str, int]], tuple[int, int]]:
    eligible = "pushes" if by == "commits" else "events"
    rows = await conn.fetch(
        PLAIN_REPOS.format(metric=by, eligible=eligible), WINDOW.start, WINDOW.end, limit
    )
    totals = await conn.fetchrow(PLAIN_REPO_EVENTS, WINDOW.start, WINDOW.end)
    return [(r["repo"], r["value"]) for r in rows], (totals["events"], totals["unknown"])


async def connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})


async def test_a_steady_actor_who_leads_no_hour_wins_the_day(
    postgres_dsn: str, small_k: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """1. In each of 8 hours, two actors seen only that hour make 6 contributions; `steady`
    makes 4 every hour and `amy` 4 in all but the first (3 there), plus 1 in an hour of her
    own. 2. Rank with 2 leaders per hour. Expected: `steady` (32) and `amy` (32) lead no
    hour, yet tie for first (amy first by name), exactly as the plain GROUP BY says."""
    small_k(2)
    events = Events()
    for hour in range(HOURS):
        for burst in ("a", "b"):
            for _ in range(6):
                events.add(hour, f"burst{hour}{burst}")
        for _ in range(4):
            events.add(hour, "steady")
        for _ in range(3 if hour == 0 else 4):
            events.add(hour, "amy")
    events.add(HOURS - 1, "amy", "PullRequestReviewEvent")
    await store(postgres_dsn, events.raws)

    conn = await connect(postgres_dsn)
    try:
        first_leaders = await ranking._leaders(
            conn, ranking._ACTOR_LEADERS, WINDOW.start, WINDOW.end, 2, False, ["ghost"]
        )
        with caplog.at_level(logging.DEBUG, logger="ghstream.ranking"):
            got = await contributors(conn, limit=3)
        expected = await plain_contributors(conn, limit=3)
    finally:
        await conn.close()

    assert "steady" not in first_leaders.keys and "amy" not in first_leaders.keys
    assert got == expected
    assert [login for login, _, _ in got[0]] == ["amy", "steady", "burst0a"]
    assert "hourly leaders answered (k=8" in caplog.text


async def test_an_actor_tying_the_bound_is_not_missed(postgres_dsn: str, small_k: Any) -> None:
    """1. Hour 0: `zed` 3, `amy` 2; hour 1: `bob` 1 and `amy` 1. 2. One leader per hour, top 1.
    Expected: `amy` (3, ties `zed`, first by name) although she may lead neither hour."""
    small_k(1)
    events = Events()
    for login, hour, times in (("zed", 0, 3), ("amy", 0, 2), ("bob", 1, 1), ("amy", 1, 1)):
        for _ in range(times):
            events.add(hour, login)
    await store(postgres_dsn, events.raws)

    conn = await connect(postgres_dsn)
    try:
        got = await contributors(conn, limit=1)
        expected = await plain_contributors(conn, limit=1)
    finally:
        await conn.close()

    assert got == expected
    assert got[0] == [("amy", 3, 3)]


async def test_without_proof_the_full_scan_answers(
    postgres_dsn: str, small_k: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1. A steady actor behind bursty ones (as above). 2. One leader per hour and a single
    try. Expected: the leaders cannot settle the ranking; the full scan gives the plain answer."""
    small_k(1)
    monkeypatch.setattr(ranking, "ATTEMPTS", 1)
    events = Events()
    for hour in range(4):
        for _ in range(3):
            events.add(hour, f"burst{hour}")
        for _ in range(2):
            events.add(hour, "steady")
    await store(postgres_dsn, events.raws)

    conn = await connect(postgres_dsn)
    try:
        settled = await ranking.top_actors(
            conn, WINDOW.start, WINDOW.end, limit=1, include_bots=False, excluded=["ghost"]
        )
        got = await contributors(conn, limit=2)
        expected = await plain_contributors(conn, limit=2)
    finally:
        await conn.close()

    assert settled is None
    assert got == expected
    assert got[0][0] == ("steady", 8, 8)


def random_events(seed: int) -> list[dict[str, Any]]:
    """Skewed activity over 8 hours: bursty and steady actors, bots, `ghost`, case variants;
    repositories with known, unknown or no commits, and one without a usable name."""
    rng = random.Random(seed)
    logins = [f"user{i}" for i in range(30)] + ["Zed", "amy", "ghost", "ci[bot]", "Helper"]
    repos = [(i, f"org{i % 4}/repo{i}") for i in range(1, 25)] + [(99, "no-slash-name")]
    kinds = (
        ["PushEvent"] * 4
        + ["IssueCommentEvent", "PullRequestReviewEvent", "WatchEvent", "ForkEvent"]
        + ["PullRequestEvent", "IssuesEvent", "CommitCommentEvent", "CreateEvent"]
    )
    events = Events()
    for hour in range(HOURS):
        favourites = rng.sample(logins, 4)
        for _ in range(rng.randint(30, 80)):
            login = rng.choice(favourites) if rng.random() < 0.5 else rng.choice(logins)
            repo = repos[min(int(rng.paretovariate(1.2)) - 1, len(repos) - 1)]
            kind = rng.choice(kinds)
            payload: dict[str, Any] = {"action": rng.choice(["opened", "closed", "created"])}
            if kind == "PushEvent" and rng.random() < 0.6:
                size = rng.randint(0, 3)
                payload = {"size": size, "distinct_size": size}
            events.add(hour, login, kind, repo=repo, payload=payload)
    return events.raws


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_rankings_equal_a_plain_group_by_on_random_hours(
    postgres_dsn: str, small_k: Any, seed: int
) -> None:
    """1. Store random skewed hours. 2. For 1, 2 and 50 leaders per hour, rank contributors
    (with and without bots, with a bots list in another case) and repositories (by events and
    by commits) for several limits. Expected: rows and coverage equal the plain GROUP BY."""
    await store(postgres_dsn, random_events(seed))

    conn = await connect(postgres_dsn)
    try:
        for k in (1, 2, 50):
            small_k(k)
            for limit in (1, 3, 10, 40):
                for options in (
                    {},
                    {"include_bots": True},
                    {"bots": ("ZED", "user3", "ci[bot]")},
                    {"include_bots": True, "bots": ("ZED",)},
                ):
                    got = await contributors(conn, limit=limit, **options)
                    assert got == await plain_contributors(conn, limit=limit, **options), (
                        k,
                        limit,
                        options,
                    )
                for by in ("events", "commits"):
                    got_repos = await repos(conn, limit=limit, by=by)
                    assert got_repos == await plain_repos(conn, limit=limit, by=by), (k, limit, by)
    finally:
        await conn.close()


async def test_commits_lists_repositories_without_known_commits_by_name(
    postgres_dsn: str, small_k: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Trimmed pushes (no commit count) to several repositories, one of them without a
    usable name, and known commits to one. 2. `top --commits --limit 5`. Expected: the
    repository with commits, then the others by name (the unnamed one under its id), as the
    plain GROUP BY; answered without the full scan."""
    small_k(2)
    events = Events()
    named = [(5, "zeta/last"), (6, "Alpha/first"), (7, "alpha/second"), (8, "mid/dle")]
    for hour, (repo_id, name) in enumerate(named):
        events.add(hour, "amy", "PushEvent", repo=(repo_id, name), payload={"ref": "main"})
    events.add(2, "bob", "PushEvent", repo=(42, "broken"), payload={"ref": "main"})
    events.add(3, "bob", "PushEvent", repo=(9, "has/commits"), payload={"size": 2})
    events.add(3, "bob", "WatchEvent", repo=(1, "no/pushes"), payload={"action": "started"})
    await store(postgres_dsn, events.raws)

    conn = await connect(postgres_dsn)
    try:
        with caplog.at_level(logging.DEBUG, logger="ghstream.ranking"):
            got = await repos(conn, limit=5, by="commits")
        expected = await plain_repos(conn, limit=5, by="commits")
    finally:
        await conn.close()

    assert got == expected
    assert got[0] == [
        ("has/commits", 2),
        ("42", 0),
        ("Alpha/first", 0),
        ("alpha/second", 0),
        ("mid/dle", 0),
    ]
    assert "full scan" not in caplog.text


async def test_hour_totals_equal_the_sums_of_the_hourly_aggregates(postgres_dsn: str) -> None:
    """1. Store random hours in several batches. Expected: agg_hour_totals, which the
    consumer keeps for the coverage lines, equals the sums of agg_actor_hour and
    agg_repo_hour per hour (what migration 003 fills it with on an existing database)."""
    raws = random_events(7)
    await store(postgres_dsn, raws, batch=97)

    conn = await connect(postgres_dsn)
    try:
        kept = await conn.fetch("SELECT * FROM agg_hour_totals ORDER BY bucket")
        summed = await conn.fetch(
            """
            SELECT bucket, a.events AS actor_events, a.unknown AS actor_pushes_unknown,
                a.bot_events, a.bot_unknown AS bot_pushes_unknown,
                r.events AS repo_events, r.unknown AS repo_pushes_unknown
            FROM (SELECT bucket, sum(events) AS events, sum(pushes_unknown) AS unknown,
                    coalesce(sum(events) FILTER (WHERE is_bot), 0) AS bot_events,
                    coalesce(sum(pushes_unknown) FILTER (WHERE is_bot), 0) AS bot_unknown
                  FROM agg_actor_hour GROUP BY bucket) AS a
            FULL JOIN (SELECT bucket, sum(events) AS events, sum(pushes_unknown) AS unknown
                       FROM agg_repo_hour GROUP BY bucket) AS r USING (bucket)
            ORDER BY bucket
            """
        )
    finally:
        await conn.close()

    assert len(kept) == HOURS
    assert [dict(row) for row in kept] == [dict(row) for row in summed]
