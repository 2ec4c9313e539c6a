"""``ghstream aggregate``: the batch analytics too heavy to maintain per event.

One run, in one transaction:

1. takes an advisory lock, so two runs never interleave;
2. selects the events stored since the last run's watermark (``events.stored_at``)
   up to a safe upper bound: the start of the oldest transaction still open in
   this database (rows it writes carry an earlier ``stored_at`` but are not
   visible yet), or now;
3. from their event times and keys, finds the buckets and items they touch and
   recomputes exactly those, from scratch, out of the fact table and the
   consumer's hourly aggregates: repository activity per hour (distinct
   actors) and per day, contributor trends per day and per ISO week, first
   contributions and new versus returning contributors per day, and the time
   to resolution of each touched issue and pull request;
4. moves the watermark.

Recomputing a touched bucket whole, rather than adding to it, is what makes a
run idempotent and late events harmless: an event created hours ago but stored
now touches its own (old) buckets, which are rebuilt with it. A run that finds
nothing new changes nothing. ``full=True`` empties the tables and rebuilds
everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ghstream.queries import AGGREGATE_JOB
from ghstream.resolution import ItemEvent, ItemKind, Resolution, resolve

log = logging.getLogger(__name__)

#: Key of the transaction-level advisory lock that serializes aggregate runs.
AGGREGATE_LOCK_KEY = 0x6768_7374_6167_6772  # "ghstagg"

#: Tables the job owns; ``full`` empties them.
TABLES = (
    "agg_repo_hour_actors",
    "agg_repo_day",
    "agg_actor_day",
    "agg_actor_week",
    "contributor_first_seen",
    "agg_contributors_day",
    "item_resolution",
)

Progress = Callable[[str], None]

_CONTRIBUTION = (
    "(e.type IN ('PushEvent', 'PullRequestReviewEvent', 'PullRequestReviewCommentEvent',"
    " 'IssueCommentEvent', 'CommitCommentEvent')"
    " OR (e.type IN ('PullRequestEvent', 'IssuesEvent') AND e.action = 'opened'))"
)

# Everything stored before the oldest transaction still open is visible now.
_SAFE_UPPER_BOUND = """
SELECT least(now(), min(xact_start)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""
_NEW_EVENTS = """
CREATE TEMP TABLE new_events ON COMMIT DROP AS
SELECT id, type, action, created_at, actor_login, repo_key, number
FROM events WHERE stored_at >= {low} AND stored_at < $1
"""
_AFFECTED = """
CREATE TEMP TABLE aff_repo_hour ON COMMIT DROP AS
    SELECT DISTINCT date_trunc('hour', created_at, 'UTC') AS bucket, repo_key
    FROM new_events WHERE repo_key IS NOT NULL;
CREATE TEMP TABLE aff_repo_day ON COMMIT DROP AS
    SELECT DISTINCT date_trunc('day', bucket, 'UTC') AS bucket, repo_key FROM aff_repo_hour;
CREATE TEMP TABLE aff_actor_day ON COMMIT DROP AS
    SELECT DISTINCT date_trunc('day', created_at, 'UTC') AS bucket, actor_login
    FROM new_events WHERE actor_login IS NOT NULL;
CREATE TEMP TABLE aff_actor_week ON COMMIT DROP AS
    SELECT DISTINCT date_trunc('week', bucket, 'UTC') AS bucket, actor_login FROM aff_actor_day;
CREATE TEMP TABLE aff_items ON COMMIT DROP AS
    SELECT DISTINCT repo_key, number, type FROM new_events
    WHERE type IN ('IssuesEvent', 'PullRequestEvent')
      AND repo_key IS NOT NULL AND number IS NOT NULL;
ANALYZE aff_repo_hour; ANALYZE aff_repo_day; ANALYZE aff_actor_day;
ANALYZE aff_actor_week; ANALYZE aff_items;
"""

_REPO_HOUR_ACTORS = """
DELETE FROM agg_repo_hour_actors AS t USING aff_repo_hour AS a
WHERE t.bucket = a.bucket AND t.repo_key = a.repo_key;
INSERT INTO agg_repo_hour_actors (bucket, repo_key, actors)
SELECT a.bucket, a.repo_key, count(DISTINCT e.actor_login)
FROM aff_repo_hour AS a
JOIN events AS e ON e.repo_key = a.repo_key
    AND e.created_at >= a.bucket AND e.created_at < a.bucket + interval '1 hour'
GROUP BY a.bucket, a.repo_key;
"""

_REPO_COUNTS = (
    "events, pushes, commits, pushes_unknown, prs_opened, prs_merged, prs_closed,"
    " issues_opened, issues_closed, stars, forks, releases"
)
_REPO_DAY = f"""
DELETE FROM agg_repo_day AS t USING aff_repo_day AS a
WHERE t.bucket = a.bucket AND t.repo_key = a.repo_key;
WITH sums AS (
    SELECT a.bucket, a.repo_key,
        sum(h.events) AS events, sum(h.pushes) AS pushes, sum(h.commits) AS commits,
        sum(h.pushes_unknown) AS pushes_unknown, sum(h.prs_opened) AS prs_opened,
        sum(h.prs_merged) AS prs_merged, sum(h.prs_closed) AS prs_closed,
        sum(h.issues_opened) AS issues_opened, sum(h.issues_closed) AS issues_closed,
        sum(h.stars) AS stars, sum(h.forks) AS forks, sum(h.releases) AS releases
    FROM aff_repo_day AS a
    JOIN agg_repo_hour AS h ON h.repo_key = a.repo_key
        AND h.bucket >= a.bucket AND h.bucket < a.bucket + interval '1 day'
    GROUP BY a.bucket, a.repo_key
), actors AS (
    SELECT a.bucket, a.repo_key, count(DISTINCT e.actor_login) AS actors
    FROM aff_repo_day AS a
    JOIN events AS e ON e.repo_key = a.repo_key
        AND e.created_at >= a.bucket AND e.created_at < a.bucket + interval '1 day'
    GROUP BY a.bucket, a.repo_key
)
INSERT INTO agg_repo_day (bucket, repo_key, actors, {_REPO_COUNTS})
SELECT bucket, repo_key, coalesce(actors.actors, 0), {_REPO_COUNTS}
FROM sums LEFT JOIN actors USING (bucket, repo_key);
"""

_ACTOR_COUNTS = (
    "events, pushes, commits, pushes_unknown, prs_opened, issues_opened, reviews,"
    " review_comments, issue_comments, commit_comments"
)
_ACTOR_SUMS = """
    bool_or(s.is_bot) AS is_bot,
    sum(s.events) AS events, sum(s.pushes) AS pushes, sum(s.commits) AS commits,
    sum(s.pushes_unknown) AS pushes_unknown, sum(s.prs_opened) AS prs_opened,
    sum(s.issues_opened) AS issues_opened, sum(s.reviews) AS reviews,
    sum(s.review_comments) AS review_comments, sum(s.issue_comments) AS issue_comments,
    sum(s.commit_comments) AS commit_comments
"""
_ACTOR_PERIOD = f"""
DELETE FROM {{target}} AS t USING {{affected}} AS a
WHERE t.bucket = a.bucket AND t.actor_login = a.actor_login;
WITH span AS (
    SELECT min(bucket) AS lo, max(bucket) + interval '{{step}}' AS hi FROM {{affected}}
), sums AS (
    SELECT a.bucket, a.actor_login, {_ACTOR_SUMS}
    FROM {{affected}} AS a
    JOIN {{source}} AS s ON s.actor_login = a.actor_login
        AND s.bucket >= a.bucket AND s.bucket < a.bucket + interval '{{step}}'
    WHERE s.bucket >= (SELECT lo FROM span) AND s.bucket < (SELECT hi FROM span)
    GROUP BY a.bucket, a.actor_login
), repos AS (
    SELECT a.bucket, a.actor_login, count(DISTINCT e.repo_key) AS repos
    FROM {{affected}} AS a
    JOIN events AS e ON e.actor_login = a.actor_login
        AND e.created_at >= a.bucket AND e.created_at < a.bucket + interval '{{step}}'
    WHERE {_CONTRIBUTION}
    GROUP BY a.bucket, a.actor_login
)
INSERT INTO {{target}} (bucket, actor_login, is_bot, contributions, repos, {_ACTOR_COUNTS})
SELECT bucket, actor_login, is_bot,
    pushes + prs_opened + issues_opened + reviews + review_comments + issue_comments
        + commit_comments,
    coalesce(repos.repos, 0), {_ACTOR_COUNTS}
FROM sums LEFT JOIN repos USING (bucket, actor_login);
"""

# First contribution day of every touched actor; the days whose new/returning
# split this changes are collected for the next step.
_FIRST_SEEN = """
CREATE TEMP TABLE aff_contrib_day ON COMMIT DROP AS SELECT DISTINCT bucket FROM aff_actor_day;
WITH fresh AS (
    SELECT d.actor_login, min(d.bucket) AS first_day
    FROM agg_actor_day AS d
    WHERE d.actor_login IN (SELECT actor_login FROM aff_actor_day) AND d.contributions > 0
    GROUP BY d.actor_login
), old AS (
    SELECT f.actor_login, f.first_day
    FROM contributor_first_seen AS f JOIN fresh USING (actor_login)
), moved AS (
    INSERT INTO contributor_first_seen AS f (actor_login, first_day)
    SELECT actor_login, first_day FROM fresh
    ON CONFLICT (actor_login) DO UPDATE SET first_day = EXCLUDED.first_day
    WHERE f.first_day <> EXCLUDED.first_day
    RETURNING f.actor_login, f.first_day
)
INSERT INTO aff_contrib_day (bucket)
SELECT first_day FROM old WHERE actor_login IN (SELECT actor_login FROM moved)
UNION SELECT first_day FROM moved;
"""
_CONTRIBUTORS_DAY = """
DELETE FROM agg_contributors_day WHERE bucket IN (SELECT bucket FROM aff_contrib_day);
INSERT INTO agg_contributors_day
    (bucket, contributors, new_contributors, returning_contributors, bot_contributors)
SELECT d.bucket,
    count(*) FILTER (WHERE human),
    count(*) FILTER (WHERE human AND f.first_day = d.bucket),
    count(*) FILTER (WHERE human AND f.first_day < d.bucket),
    count(*) FILTER (WHERE d.is_bot)
FROM (
    SELECT bucket, actor_login, is_bot, NOT is_bot AND lower(actor_login) <> 'ghost' AS human
    FROM agg_actor_day
    WHERE bucket IN (SELECT DISTINCT bucket FROM aff_contrib_day) AND contributions > 0
) AS d
JOIN contributor_first_seen AS f USING (actor_login)
GROUP BY d.bucket;
"""

_ITEM_EVENTS = """
SELECT e.repo_key, e.number, e.type, e.id, e.created_at, e.action,
    e.item_created_at, e.item_closed_at, e.merged
FROM aff_items AS a
JOIN events AS e ON e.repo_key = a.repo_key AND e.number = a.number AND e.type = a.type
ORDER BY e.repo_key, e.number, e.type
"""
_DELETE_ITEMS = """
DELETE FROM item_resolution AS t USING aff_items AS a
WHERE t.repo_key = a.repo_key AND t.number = a.number
  AND t.item_kind = CASE a.type WHEN 'IssuesEvent' THEN 'issue' ELSE 'pull_request' END
"""
_ITEM_COLUMNS = (
    "repo_key",
    "number",
    "item_kind",
    "outcome",
    "opened_at",
    "closed_at",
    "seconds",
    "reason",
)

_SAVE_STATE = """
INSERT INTO aggregate_state (job, watermark, full_rebuilt_at, updated_at)
VALUES ($1, $2, CASE WHEN $3 THEN now() END, now())
ON CONFLICT (job) DO UPDATE SET
    watermark = EXCLUDED.watermark,
    full_rebuilt_at = coalesce(EXCLUDED.full_rebuilt_at, aggregate_state.full_rebuilt_at),
    updated_at = EXCLUDED.updated_at
"""


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """What one run did."""

    full: bool
    new_events: int
    repo_hours: int
    repo_days: int
    actor_days: int
    actor_weeks: int
    contributor_days: int
    items: int
    watermark: datetime | None
    """Events stored before this time are aggregated (``None``: nothing stored yet)."""
    elapsed_s: float


def _noop(_: str) -> None:
    return None


async def run_aggregate(
    conn: Any, *, full: bool = False, progress: Progress = _noop
) -> AggregateResult:
    """Aggregate what was stored since the last run (everything when ``full``).

    ``conn`` is an asyncpg connection to a database with ghstream's schema.
    ``progress`` is called with the name of each step as it starts.
    """
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute("SET LOCAL timezone = 'UTC'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", AGGREGATE_LOCK_KEY)
        previous = await conn.fetchval(
            "SELECT watermark FROM aggregate_state WHERE job = $1", AGGREGATE_JOB
        )
        if full:
            progress("emptying the analytics tables")
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        low = None if full else previous
        high: datetime = await conn.fetchval(_SAFE_UPPER_BOUND)

        progress("finding new events")
        new_events = await _select_new(conn, low, high)
        if new_events == 0 and not full:
            return _result(full, previous, started, new_events=0)
        counts = await _recompute(conn, progress)
        await conn.execute(_SAVE_STATE, AGGREGATE_JOB, high, full)

    result = _result(full, high, started, new_events=new_events, **counts)
    log.info(
        "aggregate full=%s new_events=%d repo_days=%d actor_days=%d items=%d "
        "watermark=%s elapsed_s=%.2f",
        result.full,
        result.new_events,
        result.repo_days,
        result.actor_days,
        result.items,
        result.watermark.isoformat() if result.watermark else None,
        result.elapsed_s,
    )
    return result


async def _select_new(conn: Any, low: datetime | None, high: datetime) -> int:
    if low is None:
        await conn.execute(_NEW_EVENTS.format(low="'-infinity'"), high)
    else:
        await conn.execute(_NEW_EVENTS.format(low="$2"), high, low)
    count: int = await conn.fetchval("SELECT count(*) FROM new_events")
    return count


async def _recompute(conn: Any, progress: Progress) -> dict[str, int]:
    await conn.execute(_AFFECTED)

    progress("repository activity per hour")
    await conn.execute(_REPO_HOUR_ACTORS)
    progress("repository activity per day")
    await conn.execute(_REPO_DAY)
    progress("contributors per day")
    await conn.execute(
        _ACTOR_PERIOD.format(
            target="agg_actor_day", affected="aff_actor_day", source="agg_actor_hour", step="1 day"
        )
    )
    progress("contributors per week")
    await conn.execute(
        _ACTOR_PERIOD.format(
            target="agg_actor_week",
            affected="aff_actor_week",
            source="agg_actor_day",
            step="1 week",
        )
    )
    progress("new and returning contributors")
    await conn.execute(_FIRST_SEEN)
    await conn.execute(_CONTRIBUTORS_DAY)
    progress("time to resolution")
    items = await _resolve_items(conn)

    return {
        "repo_hours": await _count(conn, "aff_repo_hour"),
        "repo_days": await _count(conn, "aff_repo_day"),
        "actor_days": await _count(conn, "aff_actor_day"),
        "actor_weeks": await _count(conn, "aff_actor_week"),
        "contributor_days": await conn.fetchval(
            "SELECT count(DISTINCT bucket) FROM aff_contrib_day"
        ),
        "items": items,
    }


async def _count(conn: Any, table: str) -> int:
    count: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return count


async def _resolve_items(conn: Any) -> int:
    """Replay every touched item's events and store its resolution."""
    rows = await conn.fetch(_ITEM_EVENTS)
    grouped: dict[tuple[str, int, ItemKind], list[ItemEvent]] = {}
    for row in rows:
        kind: ItemKind = "issue" if row["type"] == "IssuesEvent" else "pull_request"
        grouped.setdefault((row["repo_key"], row["number"], kind), []).append(
            ItemEvent(
                event_id=row["id"],
                created_at=row["created_at"],
                action=row["action"],
                item_created_at=row["item_created_at"],
                item_closed_at=row["item_closed_at"],
                merged=row["merged"],
            )
        )

    records = [_item_record(key, resolve(key[2], events)) for key, events in grouped.items()]
    await conn.execute(_DELETE_ITEMS)
    if records:
        await conn.copy_records_to_table("item_resolution", records=records, columns=_ITEM_COLUMNS)
    return len(records)


def _item_record(key: tuple[str, int, ItemKind], result: Resolution) -> tuple[Any, ...]:
    repo_key, number, kind = key
    return (
        repo_key,
        number,
        kind,
        result.outcome.value,
        result.opened_at,
        result.closed_at,
        result.seconds,
        result.reason,
    )


def _result(
    full: bool, watermark: datetime | None, started: float, *, new_events: int, **counts: int
) -> AggregateResult:
    defaults = dict.fromkeys(
        ("repo_hours", "repo_days", "actor_days", "actor_weeks", "contributor_days", "items"), 0
    )
    defaults.update(counts)
    return AggregateResult(
        full=full,
        new_events=new_events,
        watermark=watermark,
        elapsed_s=time.perf_counter() - started,
        **defaults,
    )
