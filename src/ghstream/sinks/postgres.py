"""The PostgreSQL sink: the ``events`` fact table and the real-time aggregates, written at once.

A batch is written in one transaction with three round trips: COPY into a
per-connection temporary staging table, then one statement that inserts the
staged events into ``events`` (``ON CONFLICT (id) DO NOTHING``) and feeds only
the rows that insert returned into every aggregate. An event that is already
stored (a redelivery, a replay, a duplicate in GH Archive) therefore changes
no aggregate, and a batch is either fully stored or not at all.

Aggregate definitions, which ``ghstream aggregate`` and ``ghstream top`` rely on.
Buckets are UTC minutes and hours of ``created_at``, computed in Python.

``agg_type_minute``
    ``events``: events per minute per type.
``agg_repo_hour`` (events with a repository; key ``Event.repo_key``)
    ``events``: all events. ``pushes``: PushEvents. ``commits``: sum of
    ``Event.commits`` over PushEvents whose count is known; ``pushes_unknown``:
    PushEvents whose count is ``None``. ``prs_opened``: PullRequestEvent
    ``opened``; ``prs_merged``: ``closed`` with ``merged`` true; ``prs_closed``:
    ``closed`` with ``merged`` not true. ``issues_opened``/``issues_closed``:
    IssuesEvent ``opened``/``closed``. ``stars``: WatchEvents with action
    ``started`` or none. ``forks``: ForkEvents. ``releases``: ReleaseEvents with
    action ``published``, ``created`` or none.
``agg_actor_hour`` (events with an actor login; key ``actor_login``)
    ``events``, ``pushes``, ``commits``, ``pushes_unknown`` as above;
    ``prs_opened``, ``issues_opened`` as above; ``reviews``:
    PullRequestReviewEvents; ``review_comments``: PullRequestReviewCommentEvents;
    ``issue_comments``: IssueCommentEvents; ``commit_comments``:
    CommitCommentEvents. ``is_bot``: the login ends in ``[bot]``.
``repos``
    The newest name of each ``repo_key`` by event time (ties: the greater name).

Rows are grouped per key within a batch and written in key order, so one
statement never touches a row twice and concurrent consumers take row locks in
the same order (no deadlocks). Text that PostgreSQL cannot hold (NUL) is
removed here only; MongoDB keeps the original.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import asyncpg

from ghstream.errors import StoreError
from ghstream.migrate import apply_migrations
from ghstream.model import Event, parse_time
from ghstream.sinks import StoreUnavailable, clean_text

__all__ = ["PgWriteResult", "PostgresSink", "apply_migrations", "event_row"]

log = logging.getLogger(__name__)

_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1

#: Columns of ``events`` the sink fills, in COPY order.
EVENT_COLUMNS = (
    "id",
    "type",
    "created_at",
    "actor_login",
    "actor_id",
    "actor_is_bot",
    "repo_key",
    "repo_name",
    "repo_id",
    "org",
    "action",
    "public",
    "push_size",
    "push_distinct_size",
    "push_commits_listed",
    "commits",
    "number",
    "is_pull_request",
    "item_created_at",
    "item_closed_at",
    "item_merged_at",
    "merged",
    "ref_type",
    "forkee",
    "release_tag",
    "review_state",
)
_STAGING_COLUMNS = (*EVENT_COLUMNS, "minute", "hour")
_INT4_COLUMNS = frozenset(
    (
        "push_size",
        "push_distinct_size",
        "push_commits_listed",
        "commits",
        "number",
        "estimated_missed",
    )
)
_INT8_COLUMNS = frozenset(("actor_id", "repo_id"))

_STAGING = "ghstream_staging"
_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
    id text, type text, created_at timestamptz, actor_login text, actor_id bigint,
    actor_is_bot boolean, repo_key text, repo_name text, repo_id bigint, org text,
    action text, public boolean, push_size integer, push_distinct_size integer,
    push_commits_listed integer, commits integer, number integer, is_pull_request boolean,
    item_created_at timestamptz, item_closed_at timestamptz, item_merged_at timestamptz,
    merged boolean, ref_type text, forkee text, release_tag text, review_state text,
    minute timestamptz, hour timestamptz
) ON COMMIT DELETE ROWS
"""

_COLS = ", ".join(EVENT_COLUMNS)
_PUSH = "type = 'PushEvent'"
_PR = "type = 'PullRequestEvent'"
_ISSUE = "type = 'IssuesEvent'"

# One statement: insert the new events, then aggregate exactly the rows inserted.
_STORE_BATCH = f"""
WITH ins AS (
    INSERT INTO events ({_COLS})
    SELECT {_COLS} FROM {_STAGING} ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), new AS (
    SELECT s.* FROM {_STAGING} AS s JOIN ins USING (id)
), type_minute AS (
    INSERT INTO agg_type_minute AS agg (bucket, type, events)
    SELECT minute, type, count(*) FROM new
    GROUP BY minute, type ORDER BY minute, type
    ON CONFLICT (bucket, type) DO UPDATE SET events = agg.events + EXCLUDED.events
), repo_hour AS (
    INSERT INTO agg_repo_hour AS agg (
        bucket, repo_key, events, pushes, commits, pushes_unknown, prs_opened, prs_merged,
        prs_closed, issues_opened, issues_closed, stars, forks, releases)
    SELECT hour, repo_key, count(*),
        count(*) FILTER (WHERE {_PUSH}),
        coalesce(sum(commits) FILTER (WHERE {_PUSH}), 0),
        count(*) FILTER (WHERE {_PUSH} AND commits IS NULL),
        count(*) FILTER (WHERE {_PR} AND action = 'opened'),
        count(*) FILTER (WHERE {_PR} AND action = 'closed' AND merged IS TRUE),
        count(*) FILTER (WHERE {_PR} AND action = 'closed' AND merged IS NOT TRUE),
        count(*) FILTER (WHERE {_ISSUE} AND action = 'opened'),
        count(*) FILTER (WHERE {_ISSUE} AND action = 'closed'),
        count(*) FILTER (WHERE type = 'WatchEvent'
                         AND (action IS NULL OR action = 'started')),
        count(*) FILTER (WHERE type = 'ForkEvent'),
        count(*) FILTER (WHERE type = 'ReleaseEvent'
                         AND (action IS NULL OR action IN ('published', 'created')))
    FROM new WHERE repo_key IS NOT NULL
    GROUP BY hour, repo_key ORDER BY hour, repo_key
    ON CONFLICT (bucket, repo_key) DO UPDATE SET
        events = agg.events + EXCLUDED.events,
        pushes = agg.pushes + EXCLUDED.pushes,
        commits = agg.commits + EXCLUDED.commits,
        pushes_unknown = agg.pushes_unknown + EXCLUDED.pushes_unknown,
        prs_opened = agg.prs_opened + EXCLUDED.prs_opened,
        prs_merged = agg.prs_merged + EXCLUDED.prs_merged,
        prs_closed = agg.prs_closed + EXCLUDED.prs_closed,
        issues_opened = agg.issues_opened + EXCLUDED.issues_opened,
        issues_closed = agg.issues_closed + EXCLUDED.issues_closed,
        stars = agg.stars + EXCLUDED.stars,
        forks = agg.forks + EXCLUDED.forks,
        releases = agg.releases + EXCLUDED.releases
), actor_hour AS (
    INSERT INTO agg_actor_hour AS agg (
        bucket, actor_login, is_bot, events, pushes, commits, pushes_unknown, prs_opened,
        issues_opened, reviews, review_comments, issue_comments, commit_comments)
    SELECT hour, actor_login, bool_or(actor_is_bot), count(*),
        count(*) FILTER (WHERE {_PUSH}),
        coalesce(sum(commits) FILTER (WHERE {_PUSH}), 0),
        count(*) FILTER (WHERE {_PUSH} AND commits IS NULL),
        count(*) FILTER (WHERE {_PR} AND action = 'opened'),
        count(*) FILTER (WHERE {_ISSUE} AND action = 'opened'),
        count(*) FILTER (WHERE type = 'PullRequestReviewEvent'),
        count(*) FILTER (WHERE type = 'PullRequestReviewCommentEvent'),
        count(*) FILTER (WHERE type = 'IssueCommentEvent'),
        count(*) FILTER (WHERE type = 'CommitCommentEvent')
    FROM new WHERE actor_login IS NOT NULL
    GROUP BY hour, actor_login ORDER BY hour, actor_login
    ON CONFLICT (bucket, actor_login) DO UPDATE SET
        events = agg.events + EXCLUDED.events,
        pushes = agg.pushes + EXCLUDED.pushes,
        commits = agg.commits + EXCLUDED.commits,
        pushes_unknown = agg.pushes_unknown + EXCLUDED.pushes_unknown,
        prs_opened = agg.prs_opened + EXCLUDED.prs_opened,
        issues_opened = agg.issues_opened + EXCLUDED.issues_opened,
        reviews = agg.reviews + EXCLUDED.reviews,
        review_comments = agg.review_comments + EXCLUDED.review_comments,
        issue_comments = agg.issue_comments + EXCLUDED.issue_comments,
        commit_comments = agg.commit_comments + EXCLUDED.commit_comments
), repo_names AS (
    INSERT INTO repos AS r (repo_key, repo_id, repo_name, org, name_seen_at)
    SELECT DISTINCT ON (repo_key) repo_key, repo_id, repo_name, org, created_at FROM new
    WHERE repo_key IS NOT NULL AND repo_name IS NOT NULL
    ORDER BY repo_key, created_at DESC, repo_name DESC
    ON CONFLICT (repo_key) DO UPDATE SET
        repo_id = coalesce(EXCLUDED.repo_id, r.repo_id),
        repo_name = EXCLUDED.repo_name,
        org = EXCLUDED.org,
        name_seen_at = EXCLUDED.name_seen_at
    WHERE (EXCLUDED.name_seen_at, EXCLUDED.repo_name) > (r.name_seen_at, r.repo_name)
)
SELECT count(*) FROM ins
"""

_INSERT_GAP = """
INSERT INTO ingest_gaps (id, feed, detected_at, estimated_missed)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class PgWriteResult:
    """What one batch did: events new to ``events``, and events it already held."""

    inserted: int
    duplicates: int


def _bounded(value: int | None, column: str) -> int | None:
    # A count too large for its column is a corrupt payload, not a fact: keep it
    # unknown here (MongoDB keeps the raw value) rather than fail the batch forever.
    if value is None:
        return None
    limit = _INT4_MAX if column in _INT4_COLUMNS else _INT8_MAX
    if -limit <= value <= limit:
        return value
    log.warning("out-of-range %s=%d stored as NULL", column, value)
    return None


def _text(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


def event_row(event: Event) -> tuple[Any, ...]:
    """The staging row of ``event``: the ``events`` columns, then its UTC minute and hour."""
    created = event.created_at
    minute = created.replace(second=0, microsecond=0)
    return (
        clean_text(event.id),
        clean_text(event.type),
        created,
        _text(event.actor_login),
        _bounded(event.actor_id, "actor_id"),
        event.actor_is_bot,
        _text(event.repo_key),
        _text(event.repo_name),
        _bounded(event.repo_id, "repo_id"),
        _text(event.org),
        _text(event.action),
        event.public,
        _bounded(event.push_size, "push_size"),
        _bounded(event.push_distinct_size, "push_distinct_size"),
        _bounded(event.push_commits_listed, "push_commits_listed"),
        _bounded(event.commits, "commits"),
        _bounded(event.number, "number"),
        event.is_pull_request,
        event.item_created_at,
        event.item_closed_at,
        event.item_merged_at,
        event.merged,
        _text(event.ref_type),
        _text(event.forkee),
        _text(event.release_tag),
        _text(event.review_state),
        minute,
        minute.replace(minute=0),
    )


def unique_by_id(events: Iterable[Event]) -> list[Event]:
    """``events`` without repeated ids, first occurrence kept, order kept."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.id, event)
    return list(seen.values())


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the server is unreachable or busy, so the write can be retried."""
    if isinstance(exc, (OSError, TimeoutError, asyncpg.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", "pool is closing": the connection went away
        return "closed" in str(exc) or "closing" in str(exc)
    if isinstance(exc, asyncpg.PostgresError):
        # 08 connection, 53 resources, 57 operator intervention (shutdown,
        # restart), 40 transaction rollback (deadlock, serialization).
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("08", "53", "57", "40")
    return False


def _convert(exc: BaseException, doing: str) -> StoreError:
    if _transient(exc):
        return StoreUnavailable("PostgreSQL", f"{doing}: {type(exc).__name__}: {exc}")
    return StoreError(f"PostgreSQL {doing} failed: {type(exc).__name__}: {exc}")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE_STAGING)


class PostgresSink:
    """Writes batches of events into ``events`` and the aggregates, idempotently.

    Use as an async context manager; the pool is opened on entry. The schema
    must exist (see :func:`apply_migrations`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_max: int = 4,
        acquire_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 120.0,
    ) -> None:
        self.dsn = dsn
        self.pool_max = pool_max
        self.acquire_timeout_s = acquire_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool; only inside ``async with``."""
        if self._pool is None:
            raise RuntimeError("PostgresSink is not open; use it as 'async with PostgresSink(...)'")
        return self._pool

    async def __aenter__(self) -> PostgresSink:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_max,
                timeout=self.connect_timeout_s,
                command_timeout=self.command_timeout_s,
                server_settings={"timezone": "UTC", "application_name": "ghstream"},
                init=_init_connection,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _convert(exc, "connect") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    async def write_batch(self, events: Sequence[Event]) -> PgWriteResult:
        """Store ``events`` and update the aggregates for those new to ``events``.

        Raises :class:`StoreUnavailable` if PostgreSQL cannot be reached (nothing
        was stored; retry the same batch), :class:`StoreError` otherwise.
        """
        if not events:
            return PgWriteResult(0, 0)
        rows = [event_row(event) for event in unique_by_id(events)]

        try:
            async with (
                self.pool.acquire(timeout=self.acquire_timeout_s) as conn,
                conn.transaction(),
            ):
                await conn.copy_records_to_table(_STAGING, records=rows, columns=_STAGING_COLUMNS)
                inserted: int = await conn.fetchval(_STORE_BATCH)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _convert(exc, "batch write") from exc
        return PgWriteResult(inserted=inserted, duplicates=len(events) - inserted)

    async def write_gaps(self, gaps: Sequence[dict[str, Any]]) -> int:
        """Record ingest gap notices (``id, feed, detected_at, estimated_missed``); idempotent.

        Returns how many notices were given; a notice already recorded is a no-op.
        """
        if not gaps:
            return 0
        rows = [_gap_row(gap) for gap in gaps]
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn:
                await conn.executemany(_INSERT_GAP, rows)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _convert(exc, "gap write") from exc
        return len(rows)


def _gap_row(gap: dict[str, Any]) -> tuple[str, str, datetime, int | None]:
    detected_at = gap.get("detected_at")
    when = detected_at if isinstance(detected_at, datetime) else parse_time(detected_at)
    if when is None or not gap.get("id"):
        raise StoreError(f"gap notice without an id or a detected_at: {gap!r}")
    missed = gap.get("estimated_missed")
    return (
        clean_text(str(gap["id"])),
        clean_text(str(gap.get("feed") or "unknown")),
        when,
        _bounded(missed if isinstance(missed, int) else None, "estimated_missed"),
    )
