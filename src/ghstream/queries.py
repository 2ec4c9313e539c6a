"""The read side of ghstream's analytics: typed reports over PostgreSQL.

Every function takes a connection (or pool) and a :class:`~ghstream.timewindow.Window`
and returns a :class:`Report`: ranked rows plus a :class:`Coverage` that says
what the numbers stand on. ``ghstream top`` renders these; a dashboard can call
them directly.

Ranking views read the hourly aggregates the consumer maintains
(``agg_actor_hour``, ``agg_repo_hour``) and the per-minute type counts
(``agg_type_minute``), not the fact table, so a day of data answers quickly.
The window is widened to whole buckets (hours; minutes for the type and
frequency views) and the coverage states the range actually read. Filtering
by ``repo``/``org`` reads the fact table through its ``(repo_key, created_at)``
index instead, since the per-actor aggregates carry no repository.

Ties are broken by name in code-point order (``COLLATE "C"``), so a ranking is
stable and reproducible outside PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, Literal, Protocol, TypeVar

import asyncpg

from ghstream import ranking
from ghstream.errors import StartupError
from ghstream.logs import redact
from ghstream.resolution import RESOLVED
from ghstream.timewindow import Granularity, Window

log = logging.getLogger(__name__)

#: The shared account GitHub shows for deleted users; never ranked.
GHOST = "ghost"

#: The job name under which ``ghstream aggregate`` keeps its watermark.
AGGREGATE_JOB = "aggregate"

RepoMetric = Literal["events", "commits"]

RowT = TypeVar("RowT")


class Queryable(Protocol):
    """An asyncpg connection or pool: what the queries need from either."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a report's numbers stand on."""

    start: datetime
    """Start of the range read (inclusive, UTC, widened to whole buckets)."""
    end: datetime
    """End of the range read (exclusive)."""
    granularity: Granularity
    default_window: bool
    """No ``--since`` was given: the range is the newest 24 h of stored data."""
    newest_event: datetime | None
    """``created_at`` of the newest stored event, whatever the window."""
    events: int
    """Events the view counted in the range (resolution: items closed in the range)."""
    pushes_unknown: int | None = None
    """Of those, PushEvents whose payload carries no commit count (``None``: not applicable)."""
    undetermined_items: int | None = None
    """Items closed in the range whose resolution could not be determined."""
    gaps: int = 0
    """Gaps live ingestion reported during the range."""
    gaps_estimated_missed: int | None = None
    """Events those gaps are estimated to have missed, when estimated."""
    aggregated_until: datetime | None = None
    """For views built by ``ghstream aggregate``: events stored up to this time are included."""
    notes: tuple[str, ...] = ()
    """Plain-language caveats (filters that matched nothing, a stale aggregate)."""


@dataclass(frozen=True, slots=True)
class Report(Generic[RowT]):
    """One view's rows and their coverage."""

    view: str
    coverage: Coverage
    rows: list[RowT] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContributorRow:
    """One actor's contributions in the window."""

    rank: int
    login: str
    is_bot: bool
    contributions: int
    """pushes + prs_opened + issues_opened + reviews + review_comments + issue_comments
    + commit_comments."""
    pushes: int
    commits: int
    """Known commits of the actor's pushes."""
    pushes_unknown: int
    """Pushes whose commit count is unknown (not counted in ``commits``)."""
    prs_opened: int
    issues_opened: int
    reviews: int
    review_comments: int
    issue_comments: int
    commit_comments: int
    repos: int
    """Distinct repositories the actor contributed to."""
    events: int
    """All events of the actor, contributions or not."""


@dataclass(frozen=True, slots=True)
class RepoRow:
    """One repository's activity in the window, under its newest name."""

    rank: int
    repo: str
    repo_key: str
    events: int
    actors: int
    """Distinct actor logins."""
    pushes: int
    commits: int
    pushes_unknown: int
    prs_opened: int
    prs_merged: int
    prs_closed: int
    """Pull requests closed without merge."""
    issues_opened: int
    issues_closed: int
    stars: int
    forks: int
    releases: int


@dataclass(frozen=True, slots=True)
class TypeRow:
    """Events of one type in the window."""

    rank: int
    type: str
    events: int
    share: float
    """Fraction of all events counted in the window."""


@dataclass(frozen=True, slots=True)
class FrequencyPoint:
    """Events of one type in one bucket (buckets with no events are omitted)."""

    bucket: datetime
    type: str
    events: int


@dataclass(frozen=True, slots=True)
class ResolutionRow:
    """Time to resolution of one kind of item, in one repository or overall."""

    repo: str | None
    """Newest repository name; ``None`` on the overall rows."""
    repo_key: str | None
    kind: str
    """``issue``, ``pr_merged`` or ``pr_unmerged``."""
    items: int
    median_seconds: float | None
    p90_seconds: float | None


# --- shared pieces ---------------------------------------------------------

#: Errors that mean PostgreSQL cannot be reached or refuses the connection.
CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)


def missing_database(dsn: str, exc: BaseException) -> StartupError:
    """The error for a server that answers but has no such database: say to create it."""
    return StartupError(
        f"PostgreSQL at {redact(dsn)} answers, but {redact(str(exc))}: create it "
        "(createdb, or `make services` for the default ghstream database) or point "
        "--postgres-dsn / GHSTREAM_POSTGRES_DSN at one that exists."
    )


async def connect(dsn: str, *, application_name: str, timeout_s: float = 10.0) -> Any:
    """An asyncpg connection whose session time zone is UTC.

    Raises :class:`~ghstream.errors.StartupError` naming ``--postgres-dsn`` and
    ``GHSTREAM_POSTGRES_DSN`` (with the password redacted) when it cannot connect.
    """
    try:
        return await asyncpg.connect(
            dsn,
            timeout=timeout_s,
            server_settings={"timezone": "UTC", "application_name": application_name},
        )
    except asyncpg.InvalidCatalogNameError as exc:
        raise missing_database(dsn, exc) from exc
    except CONNECT_ERRORS as exc:
        raise StartupError(
            f"cannot connect to PostgreSQL at {redact(dsn)}: {type(exc).__name__}: "
            f"{redact(str(exc))}. Start it (make services) or point --postgres-dsn / "
            "GHSTREAM_POSTGRES_DSN at a running server."
        ) from exc


_CONTRIBUTION = (
    "(type IN ('PushEvent', 'PullRequestReviewEvent', 'PullRequestReviewCommentEvent',"
    " 'IssueCommentEvent', 'CommitCommentEvent')"
    " OR (type IN ('PullRequestEvent', 'IssuesEvent') AND action = 'opened'))"
)
_PUSH = "type = 'PushEvent'"

_GAPS = """
SELECT count(*) AS gaps, sum(estimated_missed) AS missed
FROM ingest_gaps WHERE detected_at >= $1 AND detected_at < $2
"""


async def newest_event(conn: Queryable) -> datetime | None:
    """``created_at`` of the newest stored event, or ``None`` when there is none."""
    value: datetime | None = await conn.fetchval("SELECT max(created_at) FROM events")
    return value


async def repo_keys(conn: Queryable, *, repo: str | None, org: str | None) -> list[str] | None:
    """Repository keys matching ``repo`` (``owner/name``) and ``org`` (owner), or ``None``.

    Names match case-insensitively against each repository's newest name; a
    repository's key (its id) matches too. ``None`` means no filter was asked.
    """
    if repo is None and org is None:
        return None
    rows = await conn.fetch(
        """
        SELECT repo_key FROM repos
        WHERE ($1::text IS NULL OR lower(repo_name) = lower($1) OR repo_key = $1)
          AND ($2::text IS NULL OR lower(split_part(repo_name, '/', 1)) = lower($2))
        """,
        repo,
        org,
    )
    return [row["repo_key"] for row in rows]


async def _coverage(
    conn: Queryable,
    window: Window,
    granularity: Granularity,
    *,
    events: int,
    newest: datetime | None,
    **extra: Any,
) -> Coverage:
    gaps = await conn.fetchrow(_GAPS, window.start, window.end)
    return Coverage(
        start=window.start,
        end=window.end,
        granularity=granularity,
        default_window=window.defaulted,
        newest_event=newest,
        events=events,
        gaps=int(gaps["gaps"]),
        gaps_estimated_missed=None if gaps["missed"] is None else int(gaps["missed"]),
        **extra,
    )


def _filter_notes(keys: list[str] | None, repo: str | None, org: str | None) -> tuple[str, ...]:
    if keys is None or keys:
        return ()
    asked = " and ".join(
        part for part in (f"--repo {repo}" if repo else "", f"--org {org}" if org else "") if part
    )
    return (f"no stored repository matches {asked}",)


# --- contributors ----------------------------------------------------------

_ACTOR_SUMS = """
    sum(events)::bigint AS events, sum(pushes)::bigint AS pushes,
    sum(commits)::bigint AS commits, sum(pushes_unknown)::bigint AS pushes_unknown,
    sum(prs_opened)::bigint AS prs_opened, sum(issues_opened)::bigint AS issues_opened,
    sum(reviews)::bigint AS reviews, sum(review_comments)::bigint AS review_comments,
    sum(issue_comments)::bigint AS issue_comments,
    sum(commit_comments)::bigint AS commit_comments,
    NULL::bigint AS repos
"""
_ACTORS_FROM_HOURS = f"""
    SELECT actor_login, bool_or(is_bot) AS is_bot, {_ACTOR_SUMS}
    FROM agg_actor_hour
    WHERE bucket >= $1 AND bucket < $2
      AND ($3 OR NOT is_bot) AND lower(actor_login) <> ALL($4::text[])
      AND $5::text[] IS NULL  -- the hourly aggregates carry no repository
    GROUP BY actor_login
"""
_ACTORS_FROM_EVENTS = f"""
    SELECT actor_login, bool_or(actor_is_bot) AS is_bot, count(*) AS events,
        count(*) FILTER (WHERE {_PUSH}) AS pushes,
        coalesce(sum(commits) FILTER (WHERE {_PUSH}), 0)::bigint AS commits,
        count(*) FILTER (WHERE {_PUSH} AND commits IS NULL) AS pushes_unknown,
        count(*) FILTER (WHERE type = 'PullRequestEvent' AND action = 'opened') AS prs_opened,
        count(*) FILTER (WHERE type = 'IssuesEvent' AND action = 'opened') AS issues_opened,
        count(*) FILTER (WHERE type = 'PullRequestReviewEvent') AS reviews,
        count(*) FILTER (WHERE type = 'PullRequestReviewCommentEvent') AS review_comments,
        count(*) FILTER (WHERE type = 'IssueCommentEvent') AS issue_comments,
        count(*) FILTER (WHERE type = 'CommitCommentEvent') AS commit_comments,
        count(DISTINCT repo_key) FILTER (WHERE {_CONTRIBUTION}) AS repos
    FROM events
    WHERE created_at >= $1 AND created_at < $2 AND repo_key = ANY($5::text[])
      AND actor_login IS NOT NULL
      AND ($3 OR NOT actor_is_bot) AND lower(actor_login) <> ALL($4::text[])
    GROUP BY actor_login
"""
_RANK_ACTORS = """
WITH g AS ({source}),
w AS (
    SELECT g.*,
        pushes + prs_opened + issues_opened + reviews + review_comments + issue_comments
            + commit_comments AS contributions,
        sum(events) OVER () AS total_events,
        sum(pushes_unknown) OVER () AS total_unknown
    FROM g
)
SELECT * FROM w WHERE contributions > 0
ORDER BY contributions DESC, actor_login COLLATE "C"
LIMIT $6
"""
_TOTALS_ACTORS = """
WITH g AS ({source})
SELECT coalesce(sum(events), 0) AS events, coalesce(sum(pushes_unknown), 0) AS unknown FROM g
"""
_REPOS_TOUCHED = f"""
SELECT actor_login, count(DISTINCT repo_key) AS repos
FROM events
WHERE actor_login = ANY($1::text[]) AND created_at >= $2 AND created_at < $3
  AND repo_key IS NOT NULL AND {_CONTRIBUTION}
GROUP BY actor_login
"""


async def top_contributors(
    conn: Queryable,
    window: Window,
    *,
    limit: int = 10,
    include_bots: bool = False,
    bots: Sequence[str] = (),
    repo: str | None = None,
    org: str | None = None,
    newest: datetime | None = None,
) -> Report[ContributorRow]:
    """The actors with the most contributions in ``window``.

    Bots (``[bot]`` logins and ``bots``) are left out unless ``include_bots``;
    ``ghost`` always is. Ranked by contributions, then login.
    """
    window = window.aligned("hour")
    excluded = [GHOST] if include_bots else [GHOST, *(login.lower() for login in bots)]
    keys = await repo_keys(conn, repo=repo, org=org)
    source = _ACTORS_FROM_HOURS if keys is None else _ACTORS_FROM_EVENTS
    args = (window.start, window.end, include_bots, excluded, keys)

    ranked = None
    if keys is None:
        span = (conn, window.start, window.end)
        ranked = await _fast(
            partial(
                ranking.top_actors, *span, limit=limit, include_bots=include_bots, excluded=excluded
            ),
            partial(ranking.actor_coverage, *span, include_bots=include_bots, excluded=excluded),
        )
    if ranked is not None:
        rows, (events, unknown) = ranked
    else:
        rows, events, unknown = await _scan_actors(conn, source, args, limit)

    touched: dict[str, int] = {}
    if keys is None and rows:
        logins = [row["actor_login"] for row in rows]
        found = await conn.fetch(_REPOS_TOUCHED, logins, window.start, window.end)
        touched = {row["actor_login"]: int(row["repos"]) for row in found}

    result = [_contributor(rank, row, touched) for rank, row in enumerate(rows, start=1)]
    coverage = await _coverage(
        conn,
        window,
        "hour",
        events=events,
        newest=newest,
        pushes_unknown=unknown,
        notes=_filter_notes(keys, repo, org),
    )
    return Report("contributors", coverage, result)


async def _scan_actors(
    conn: Queryable, source: str, args: tuple[Any, ...], limit: int
) -> tuple[list[Any], int, int]:
    rows = await conn.fetch(_RANK_ACTORS.format(source=source), *args, limit)
    if rows:
        return rows, int(rows[0]["total_events"]), int(rows[0]["total_unknown"])
    totals = await conn.fetchrow(_TOTALS_ACTORS.format(source=source), *args)
    return rows, int(totals["events"]), int(totals["unknown"])


async def _fast(
    rows: Callable[[], Awaitable[list[Any] | None]],
    totals: Callable[[], Awaitable[tuple[int, int]]],
) -> tuple[list[Any], tuple[int, int]] | None:
    """A ranking from the hourly leaders (:mod:`ghstream.ranking`), or ``None`` to scan.

    ``None`` when the leaders did not settle the ranking, or when the database
    predates migration 003 (a consumer of this version applies it on start).
    """
    try:
        ranked = await rows()
        return None if ranked is None else (ranked, await totals())
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        log.warning(
            "the database lacks migration 003 (ranking indexes), so every hour is summed: "
            "start `ghstream consume` of this version once to apply it"
        )
        return None


def _contributor(rank: int, row: Any, touched: dict[str, int]) -> ContributorRow:
    login = row["actor_login"]
    repos = row["repos"] if row["repos"] is not None else touched.get(login, 0)
    return ContributorRow(
        rank=rank,
        login=login,
        is_bot=bool(row["is_bot"]),
        contributions=int(row["contributions"]),
        pushes=int(row["pushes"]),
        commits=int(row["commits"]),
        pushes_unknown=int(row["pushes_unknown"]),
        prs_opened=int(row["prs_opened"]),
        issues_opened=int(row["issues_opened"]),
        reviews=int(row["reviews"]),
        review_comments=int(row["review_comments"]),
        issue_comments=int(row["issue_comments"]),
        commit_comments=int(row["commit_comments"]),
        repos=int(repos),
        events=int(row["events"]),
    )


# --- repositories ----------------------------------------------------------

_REPO_COUNTS = (
    "events",
    "pushes",
    "commits",
    "pushes_unknown",
    "prs_opened",
    "prs_merged",
    "prs_closed",
    "issues_opened",
    "issues_closed",
    "stars",
    "forks",
    "releases",
)
_REPO_SUMS = ", ".join(f"sum({name})::bigint AS {name}" for name in _REPO_COUNTS)
_RANK_REPOS = f"""
WITH g AS (
    SELECT repo_key, {_REPO_SUMS}
    FROM agg_repo_hour
    WHERE bucket >= $1 AND bucket < $2 {{keys}}
    GROUP BY repo_key
),
w AS (
    SELECT g.*, sum(events) OVER () AS total_events,
        sum(pushes_unknown) OVER () AS total_unknown
    FROM g WHERE {{eligible}}
),
cut AS (
    SELECT {{metric}} AS v FROM w ORDER BY {{metric}} DESC OFFSET $3 - 1 LIMIT 1
)
SELECT w.*, coalesce(r.repo_name, w.repo_key) AS repo_name
FROM w LEFT JOIN repos AS r USING (repo_key)
WHERE w.{{metric}} >= coalesce((SELECT v FROM cut), 0)
ORDER BY w.{{metric}} DESC, coalesce(r.repo_name, w.repo_key) COLLATE "C", w.repo_key COLLATE "C"
LIMIT $3
"""
_REPO_TOTALS = """
SELECT coalesce(sum(events), 0) AS events, coalesce(sum(pushes_unknown), 0) AS unknown
FROM agg_repo_hour
WHERE bucket >= $1 AND bucket < $2 {keys}
"""
# A separate statement per case: "($n IS NULL OR repo_key = ANY($n))" hides the
# (repo_key, bucket) index from the planner once the plan is generic.
_KEYS = {True: "", False: "AND repo_key = ANY(${n}::text[])"}
_REPO_ACTORS = """
SELECT repo_key, count(DISTINCT actor_login) AS actors
FROM events
WHERE repo_key = ANY($1::text[]) AND created_at >= $2 AND created_at < $3
GROUP BY repo_key
"""


async def top_repos(
    conn: Queryable,
    window: Window,
    *,
    limit: int = 10,
    by: RepoMetric = "events",
    repo: str | None = None,
    org: str | None = None,
    newest: datetime | None = None,
) -> Report[RepoRow]:
    """Repository activity in ``window``, ranked by events or by known commits, then name.

    Ranked ``by="commits"``, only repositories with at least one push are listed.
    """
    window = window.aligned("hour")
    keys = await repo_keys(conn, repo=repo, org=org)
    eligible = "pushes > 0" if by == "commits" else "events > 0"
    sql = _RANK_REPOS.format(metric=by, eligible=eligible, keys=_KEYS[keys is None].format(n=4))
    extra = () if keys is None else (keys,)

    ranked = None
    if keys is None:
        ranked = await _fast(
            partial(ranking.top_repositories, conn, window.start, window.end, limit=limit, by=by),
            partial(ranking.repo_coverage, conn, window.start, window.end),
        )
    if ranked is not None:
        rows, (events, unknown) = ranked
    else:
        rows = await conn.fetch(sql, window.start, window.end, limit, *extra)
        totals = await conn.fetchrow(
            _REPO_TOTALS.format(keys=_KEYS[keys is None].format(n=3)),
            window.start,
            window.end,
            *extra,
        )
        events, unknown = int(totals["events"]), int(totals["unknown"])
    actors: dict[str, int] = {}
    if rows:
        found = await conn.fetch(
            _REPO_ACTORS, [row["repo_key"] for row in rows], window.start, window.end
        )
        actors = {row["repo_key"]: int(row["actors"]) for row in found}

    result = [
        RepoRow(
            rank=rank,
            repo=row["repo_name"],
            repo_key=row["repo_key"],
            actors=actors.get(row["repo_key"], 0),
            **{name: int(row[name]) for name in _REPO_COUNTS},
        )
        for rank, row in enumerate(rows, start=1)
    ]
    coverage = await _coverage(
        conn,
        window,
        "hour",
        events=events,
        newest=newest,
        pushes_unknown=unknown,
        notes=_filter_notes(keys, repo, org),
    )
    return Report("commits" if by == "commits" else "repos", coverage, result)


# --- event types and frequency ---------------------------------------------

_TYPES_FROM_MINUTES = """
SELECT {bucket} AS bucket, type, sum(events)::bigint AS events
FROM agg_type_minute
WHERE bucket >= $1 AND bucket < $2 AND ($3::text[] IS NULL OR type = ANY($3::text[]))
GROUP BY 1, type
"""
_TYPES_FROM_EVENTS = """
SELECT {bucket} AS bucket, type, count(*) AS events
FROM events
WHERE created_at >= $1 AND created_at < $2 AND ($3::text[] IS NULL OR type = ANY($3::text[]))
  AND repo_key = ANY($4::text[])
GROUP BY 1, type
"""
_BUCKETS = {
    ("minutes", "minute"): "bucket",
    ("minutes", "hour"): "date_trunc('hour', bucket, 'UTC')",
    ("minutes", None): "NULL::timestamptz",
    ("events", "minute"): "date_trunc('minute', created_at, 'UTC')",
    ("events", "hour"): "date_trunc('hour', created_at, 'UTC')",
    ("events", None): "NULL::timestamptz",
}


async def _type_counts(
    conn: Queryable,
    window: Window,
    *,
    per: Granularity | None,
    types: list[str] | None,
    keys: list[str] | None,
) -> list[Any]:
    if keys is None:
        sql = _TYPES_FROM_MINUTES.format(bucket=_BUCKETS[("minutes", per)])
        return await conn.fetch(sql, window.start, window.end, types)
    sql = _TYPES_FROM_EVENTS.format(bucket=_BUCKETS[("events", per)])
    return await conn.fetch(sql, window.start, window.end, types, keys)


def _wanted_types(event_type: str | None, types: Sequence[str] | None) -> list[str] | None:
    """The types to keep, or ``None`` for all (no type given, or an empty ``types``)."""
    wanted = [*(types or ()), *((event_type,) if event_type is not None else ())]
    return sorted(set(wanted)) or None


async def event_types(
    conn: Queryable,
    window: Window,
    *,
    event_type: str | None = None,
    repo: str | None = None,
    org: str | None = None,
    newest: datetime | None = None,
) -> Report[TypeRow]:
    """Events per type in ``window`` (whole minutes), most frequent first, then by name."""
    window = window.aligned("minute")
    keys = await repo_keys(conn, repo=repo, org=org)
    wanted = _wanted_types(event_type, None)
    rows = await _type_counts(conn, window, per=None, types=wanted, keys=keys)

    counts = sorted(
        ((row["type"], int(row["events"])) for row in rows), key=lambda tc: (-tc[1], tc[0])
    )
    total = sum(count for _, count in counts)
    result = [
        TypeRow(rank=rank, type=name, events=count, share=count / total if total else 0.0)
        for rank, (name, count) in enumerate(counts, start=1)
    ]
    coverage = await _coverage(
        conn, window, "minute", events=total, newest=newest, notes=_filter_notes(keys, repo, org)
    )
    return Report("types", coverage, result)


async def frequency(
    conn: Queryable,
    window: Window,
    *,
    per: Granularity = "minute",
    event_type: str | None = None,
    types: Sequence[str] | None = None,
    repo: str | None = None,
    org: str | None = None,
    newest: datetime | None = None,
) -> Report[FrequencyPoint]:
    """Events per ``per`` (UTC minute or hour of ``created_at``) and type, in time order.

    ``types`` keeps those event types only (``None`` or empty: every type);
    ``event_type`` is one more, for callers that filter by a single type.
    """
    window = window.aligned(per)
    keys = await repo_keys(conn, repo=repo, org=org)
    wanted = _wanted_types(event_type, types)
    rows = await _type_counts(conn, window, per=per, types=wanted, keys=keys)

    points = sorted(
        (FrequencyPoint(row["bucket"], row["type"], int(row["events"])) for row in rows),
        key=lambda p: (p.bucket, p.type),
    )
    coverage = await _coverage(
        conn,
        window,
        per,
        events=sum(p.events for p in points),
        newest=newest,
        notes=_filter_notes(keys, repo, org),
    )
    return Report("frequency", coverage, points)


# --- time to resolution ----------------------------------------------------

_RESOLVED_OUTCOMES = [outcome.value for outcome in RESOLVED]
_RESOLUTION = """
WITH items AS (
    SELECT repo_key, outcome, seconds FROM item_resolution
    WHERE closed_at >= $1 AND closed_at < $2 AND outcome = ANY($3::text[])
      AND ($5::text[] IS NULL OR repo_key = ANY($5::text[]))
),
top AS (
    SELECT i.repo_key, coalesce(r.repo_name, i.repo_key) AS repo_name, count(*) AS n
    FROM items AS i LEFT JOIN repos AS r USING (repo_key)
    GROUP BY i.repo_key, r.repo_name
    ORDER BY n DESC, repo_name COLLATE "C", i.repo_key COLLATE "C"
    LIMIT $4
)
SELECT t.repo_key, t.repo_name, t.n, i.outcome, count(*) AS items,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY i.seconds) AS median,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY i.seconds) AS p90
FROM items AS i JOIN top AS t USING (repo_key)
GROUP BY t.repo_key, t.repo_name, t.n, i.outcome
UNION ALL
SELECT NULL, NULL, NULL, outcome, count(*),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
    percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds)
FROM items GROUP BY outcome
"""
_UNDETERMINED = """
SELECT count(*) FROM item_resolution
WHERE closed_at >= $1 AND closed_at < $2 AND outcome = 'undetermined'
  AND ($3::text[] IS NULL OR repo_key = ANY($3::text[]))
"""
_AGGREGATE_STATE = "SELECT watermark FROM aggregate_state WHERE job = $1"
_STORED_SINCE = "SELECT EXISTS (SELECT 1 FROM events WHERE stored_at > $1)"


async def aggregated_until(conn: Queryable) -> datetime | None:
    """The watermark of ``ghstream aggregate``, or ``None`` if it never ran."""
    value: datetime | None = await conn.fetchval(_AGGREGATE_STATE, AGGREGATE_JOB)
    return value


async def resolution(
    conn: Queryable,
    window: Window,
    *,
    limit: int = 10,
    repo: str | None = None,
    org: str | None = None,
    newest: datetime | None = None,
) -> Report[ResolutionRow]:
    """Median and 90th percentile time to resolution of items closed in ``window``.

    Rows: for each kind (issues, merged pull requests, pull requests closed
    unmerged), one overall row (``repo`` is ``None``) and one per repository,
    for the ``limit`` repositories with the most resolved items. Built by
    ``ghstream aggregate``; the coverage says up to when.
    """
    window = window.aligned("hour")
    keys = await repo_keys(conn, repo=repo, org=org)
    watermark = await aggregated_until(conn)
    rows = await conn.fetch(_RESOLUTION, window.start, window.end, _RESOLVED_OUTCOMES, limit, keys)
    undetermined = int(await conn.fetchval(_UNDETERMINED, window.start, window.end, keys))

    result = _resolution_rows(rows)
    notes = list(_filter_notes(keys, repo, org))
    if watermark is None:
        notes.append("`ghstream aggregate` has not run yet: run it to compute resolutions")
    elif await conn.fetchval(_STORED_SINCE, watermark):
        notes.append("events were stored after the last `ghstream aggregate` run")
    coverage = await _coverage(
        conn,
        window,
        "hour",
        events=sum(row.items for row in result if row.repo_key is None) + undetermined,
        newest=newest,
        undetermined_items=undetermined,
        aggregated_until=watermark,
        notes=tuple(notes),
    )
    return Report("resolution", coverage, result)


def _resolution_rows(rows: list[Any]) -> list[ResolutionRow]:
    order = {outcome: index for index, outcome in enumerate(_RESOLVED_OUTCOMES)}
    overall = [row for row in rows if row["repo_key"] is None]
    per_repo = [row for row in rows if row["repo_key"] is not None]
    overall.sort(key=lambda row: order[row["outcome"]])
    per_repo.sort(key=lambda row: (-row["n"], row["repo_name"], order[row["outcome"]]))
    return [
        ResolutionRow(
            repo=row["repo_name"],
            repo_key=row["repo_key"],
            kind=row["outcome"],
            items=int(row["items"]),
            median_seconds=row["median"],
            p90_seconds=row["p90"],
        )
        for row in (*overall, *per_repo)
    ]
