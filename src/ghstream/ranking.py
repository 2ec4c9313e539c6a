"""Exact top-k over hourly buckets without summing every bucket.

A day at today's public rate is about 2.4 million actor-hours and as many
repository-hours; summing them all per ``ghstream top`` takes seconds. The
rankings here read each hour's leaders instead, then prove that nobody else can
reach the list:

1. **Leaders.** For every stored hour of the window, the ``k`` rows with the
   highest ranking value (one short scan of a ``(bucket, value DESC)`` index).
   Every key that leads some hour is a *candidate*.
2. **Bound.** A key that leads no hour has, in each hour, at most that hour's
   ``k``-th value (0 for an hour with fewer than ``k`` leaders: all its rows
   were taken). Its window total is therefore at most the sum of those values,
   the *bound*.
3. **Exact totals** of the candidates over the window, by key (index lookups),
   ranked by value, then name.
4. **Proof.** If the ``limit``-th candidate's total is strictly greater than the
   bound, no other key can reach or tie it, so the list is exact, ties
   included. If fewer than ``limit`` candidates exist and the bound is 0, every
   key with a positive value is a candidate. Otherwise ``k`` grows fourfold and
   the steps repeat; after :data:`ATTEMPTS` tries, or once the candidates
   outnumber :data:`MAX_CANDIDATES` (flat data, a large ``limit`` or a long
   window), the caller falls back to the full ``GROUP BY``.

The functions return ``None`` when they cannot prove the answer, and the
caller runs its full query; the DEBUG log says which path answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

#: Leaders read per hour: at least this many...
K_MIN = 50
#: ...and at least this many per row asked.
K_PER_ROW = 5
#: Tries (``k``, then ``4k``) before the caller's full scan.
ATTEMPTS = 2
#: Past this many candidates their totals cost about what the full scan does: give up.
MAX_CANDIDATES = 5000


class Queryable(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Leaders:
    """The keys that lead some hour, and what any other key can total at most."""

    keys: list[str]
    bound: int


def first_k(limit: int) -> int:
    return max(K_MIN, limit * K_PER_ROW)


def settled(values: Sequence[int], limit: int, bound: int) -> bool:
    """Whether candidates ranked with ``values`` (descending) are provably the top ``limit``."""
    if len(values) >= limit:
        return values[limit - 1] > bound
    return bound == 0


# $1, $2: the window; $3: k. The hours are the stored ones (agg_hour_totals), so a
# long window over sparse data costs what it holds.
_LEADERS = """
WITH l AS (
    SELECT h.bucket, t.key, t.value
    FROM agg_hour_totals AS h
    CROSS JOIN LATERAL (
        SELECT {key} AS key, {value} AS value
        FROM {table}
        WHERE bucket = h.bucket AND {value} > 0 {filters}
        ORDER BY {value} DESC
        LIMIT $3
    ) AS t
    WHERE h.bucket >= $1 AND h.bucket < $2
), per_hour AS (
    SELECT count(*) AS n, min(value) AS kth FROM l GROUP BY bucket
)
SELECT
    (SELECT coalesce(array_agg(DISTINCT key), '{{}}') FROM l) AS keys,
    (SELECT coalesce(sum(kth) FILTER (WHERE n >= $3), 0)::bigint FROM per_hour) AS bound
"""

# --- contributors ---------------------------------------------------------------------------

_ACTOR_FILTERS = "AND ($4 OR NOT is_bot) AND lower(actor_login) <> ALL($5::text[])"
_ACTOR_LEADERS = _LEADERS.format(
    key="actor_login", value="contributions", table="agg_actor_hour", filters=_ACTOR_FILTERS
)
_ACTOR_TOTALS = """
SELECT actor_login, bool_or(is_bot) AS is_bot,
    sum(contributions)::bigint AS contributions,
    sum(events)::bigint AS events, sum(pushes)::bigint AS pushes,
    sum(commits)::bigint AS commits, sum(pushes_unknown)::bigint AS pushes_unknown,
    sum(prs_opened)::bigint AS prs_opened, sum(issues_opened)::bigint AS issues_opened,
    sum(reviews)::bigint AS reviews, sum(review_comments)::bigint AS review_comments,
    sum(issue_comments)::bigint AS issue_comments,
    sum(commit_comments)::bigint AS commit_comments,
    NULL::bigint AS repos
FROM agg_actor_hour
WHERE lower(actor_login) = ANY($3::text[]) AND actor_login = ANY($6::text[])
    AND bucket >= $1 AND bucket < $2
    AND ($4 OR NOT is_bot) AND lower(actor_login) <> ALL($5::text[])
GROUP BY actor_login
"""
# Events of the actors a ranking counts: every actor's, less bots' (unless kept),
# less the excluded logins' (ghost, --bots-file) that were not already bots.
_ACTOR_COVERAGE = """
WITH t AS (
    SELECT coalesce(sum(actor_events - CASE WHEN $3 THEN 0 ELSE bot_events END), 0) AS events,
        coalesce(sum(actor_pushes_unknown
            - CASE WHEN $3 THEN 0 ELSE bot_pushes_unknown END), 0) AS unknown
    FROM agg_hour_totals WHERE bucket >= $1 AND bucket < $2
), x AS (
    SELECT coalesce(sum(events), 0) AS events, coalesce(sum(pushes_unknown), 0) AS unknown
    FROM agg_actor_hour
    WHERE lower(actor_login) = ANY($4::text[]) AND bucket >= $1 AND bucket < $2
        AND ($3 OR NOT is_bot)
)
SELECT (t.events - x.events)::bigint AS events, (t.unknown - x.unknown)::bigint AS unknown
FROM t, x
"""


async def top_actors(
    conn: Queryable,
    start: datetime,
    end: datetime,
    *,
    limit: int,
    include_bots: bool,
    excluded: list[str],
) -> list[Any] | None:
    """The top ``limit`` actors by contributions (then login), or ``None`` if unproven.

    ``excluded`` holds lower-case logins never ranked. Rows carry the columns of
    ``agg_actor_hour`` summed over the window, and ``contributions``.
    """
    k = first_k(limit)
    for _ in range(ATTEMPTS):
        leaders = await _leaders(conn, _ACTOR_LEADERS, start, end, k, include_bots, excluded)
        if len(leaders.keys) > MAX_CANDIDATES:
            break
        rows = await conn.fetch(
            _ACTOR_TOTALS,
            start,
            end,
            [key.lower() for key in leaders.keys],
            include_bots,
            excluded,
            leaders.keys,
        )
        ranked = sorted(rows, key=lambda row: (-row["contributions"], row["actor_login"]))
        if settled([row["contributions"] for row in ranked], limit, leaders.bound):
            _answered("contributors", k, leaders, ranked, limit)
            return ranked[:limit]
        k *= 4
    log.debug("contributors: hourly leaders did not settle the top %d; full scan", limit)
    return None


async def actor_coverage(
    conn: Queryable, start: datetime, end: datetime, *, include_bots: bool, excluded: list[str]
) -> tuple[int, int]:
    """Events and pushes of unknown size of the actors a contributor ranking counts."""
    row = await conn.fetchrow(_ACTOR_COVERAGE, start, end, include_bots, excluded)
    return int(row["events"]), int(row["unknown"])


# --- repositories -----------------------------------------------------------------------------

RepoMetric = Literal["events", "commits"]

_REPO_LEADERS = {
    metric: _LEADERS.format(key="repo_key", value=metric, table="agg_repo_hour", filters="")
    for metric in ("events", "commits")
}
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
_REPO_TOTALS = f"""
SELECT h.repo_key, coalesce(r.repo_name, h.repo_key) AS repo_name,
    {", ".join(f"sum(h.{name})::bigint AS {name}" for name in _REPO_COUNTS)}
FROM agg_repo_hour AS h LEFT JOIN repos AS r USING (repo_key)
WHERE h.repo_key = ANY($3::text[]) AND h.bucket >= $1 AND h.bucket < $2
GROUP BY h.repo_key, r.repo_name
"""
# `--commits` lists repositories with a push; when fewer than asked have known
# commits, the rest (0 known commits) rank by name: walk names in that order and
# keep those with a push in the window. Repositories without a name (an id with
# no usable name: normally none) are listed under their key and walked too.
_ZERO_COMMITS = """
WITH named AS (
    SELECT r.repo_name AS name, r.repo_key
    FROM repos AS r
    WHERE r.repo_key <> ALL($3::text[])
        AND EXISTS (SELECT 1 FROM agg_repo_hour AS h
                    WHERE h.repo_key = r.repo_key AND h.bucket >= $1 AND h.bucket < $2
                        AND h.pushes > 0)
    ORDER BY r.repo_name COLLATE "C", r.repo_key COLLATE "C"
    LIMIT $4
), unnamed AS (
    SELECT DISTINCT e.repo_key AS name, e.repo_key
    FROM events AS e
    WHERE e.repo_key IS NOT NULL AND e.repo_name IS NULL
        AND e.created_at >= $1 AND e.created_at < $2
        AND e.repo_key <> ALL($3::text[])
        AND NOT EXISTS (SELECT 1 FROM repos AS r WHERE r.repo_key = e.repo_key)
        AND EXISTS (SELECT 1 FROM agg_repo_hour AS h
                    WHERE h.repo_key = e.repo_key AND h.bucket >= $1 AND h.bucket < $2
                        AND h.pushes > 0)
)
SELECT repo_key FROM (SELECT * FROM named UNION ALL SELECT * FROM unnamed) AS z
ORDER BY name COLLATE "C", repo_key COLLATE "C"
LIMIT $4
"""
_REPO_COVERAGE = """
SELECT coalesce(sum(repo_events), 0)::bigint AS events,
    coalesce(sum(repo_pushes_unknown), 0)::bigint AS unknown
FROM agg_hour_totals WHERE bucket >= $1 AND bucket < $2
"""


def _repo_order(row: Any, metric: RepoMetric) -> tuple[int, str, str]:
    return (-row[metric], row["repo_name"], row["repo_key"])


async def top_repositories(
    conn: Queryable, start: datetime, end: datetime, *, limit: int, by: RepoMetric
) -> list[Any] | None:
    """The top ``limit`` repositories by ``by`` (then newest name, key), or ``None`` if unproven.

    Ranked by commits, only repositories with a push in the window are listed.
    Rows carry ``repo_key``, ``repo_name`` (the key when no name is known) and
    the columns of ``agg_repo_hour`` summed over the window.
    """
    k = first_k(limit)
    for _ in range(ATTEMPTS):
        leaders = await _leaders(conn, _REPO_LEADERS[by], start, end, k)
        if len(leaders.keys) > MAX_CANDIDATES:
            break
        rows = await conn.fetch(_REPO_TOTALS, start, end, leaders.keys)
        if any(row[by] < 0 for row in rows):
            break  # a corrupt negative count: only the full scan orders it right
        ranked = sorted((row for row in rows if row[by] > 0), key=lambda row: _repo_order(row, by))
        if settled([row[by] for row in ranked], limit, leaders.bound):
            _answered(f"repos by {by}", k, leaders, ranked, limit)
            if by == "commits" and len(ranked) < limit:
                return await _with_zero_commits(conn, start, end, ranked, limit)
            return ranked[:limit]
        k *= 4
    log.debug("repos by %s: hourly leaders did not settle the top %d; full scan", by, limit)
    return None


async def _with_zero_commits(
    conn: Queryable, start: datetime, end: datetime, ranked: list[Any], limit: int
) -> list[Any] | None:
    # Every repository with known commits is in `ranked` (the bound was 0).
    positive = [row["repo_key"] for row in ranked]
    found = await conn.fetch(_ZERO_COMMITS, start, end, positive, limit - len(ranked))
    keys = [row["repo_key"] for row in found]
    if not keys:
        return ranked
    rows = await conn.fetch(_REPO_TOTALS, start, end, keys)
    if any(row["commits"] != 0 for row in rows):
        return None  # negative counts: leave the order to the full scan
    log.debug("repos by commits: %d more with no known commits, by name", len(rows))
    return ranked + sorted(rows, key=lambda row: _repo_order(row, "commits"))


async def repo_coverage(conn: Queryable, start: datetime, end: datetime) -> tuple[int, int]:
    """Events with a repository and pushes of unknown size among them."""
    row = await conn.fetchrow(_REPO_COVERAGE, start, end)
    return int(row["events"]), int(row["unknown"])


# --- shared ---------------------------------------------------------------------------------


async def _leaders(
    conn: Queryable, sql: str, start: datetime, end: datetime, k: int, *args: Any
) -> Leaders:
    row = await conn.fetchrow(sql, start, end, k, *args)
    return Leaders(keys=sorted(row["keys"]), bound=int(row["bound"]))


def _answered(view: str, k: int, leaders: Leaders, ranked: list[Any], limit: int) -> None:
    log.debug(
        "%s: hourly leaders answered (k=%d, %d candidates, bound %d, %d ranked of %d asked)",
        view,
        k,
        len(leaders.keys),
        leaders.bound,
        min(len(ranked), limit),
        limit,
    )
