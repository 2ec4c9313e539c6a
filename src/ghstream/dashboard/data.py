"""What the dashboard shows, read through :mod:`ghstream.queries` (the code ``top`` uses).

This module holds no SQL of its own: it chooses the window from the filters,
calls the query functions on one connection, and shapes their reports into
plain rows the Streamlit page can draw. It does not import Streamlit, so it
can be tested (and type-checked) on its own.

The window always ends at the newest stored event: a recorded hour from 2015
looks the same as a live stream, and while ``ghstream run`` is streaming the
newest event is a few seconds old anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ghstream import queries
from ghstream.errors import GhstreamError, StartupError
from ghstream.logs import redact
from ghstream.queries import (
    ContributorRow,
    Coverage,
    FrequencyPoint,
    RepoMetric,
    RepoRow,
    Report,
    ResolutionRow,
)
from ghstream.render import duration
from ghstream.timewindow import Granularity, Window, floor_time

log = logging.getLogger(__name__)

#: Window lengths offered by the time-window filter, ending at the newest event.
SPANS: dict[str, timedelta] = {
    "15 minutes": timedelta(minutes=15),
    "1 hour": timedelta(hours=1),
    "6 hours": timedelta(hours=6),
    "24 hours": timedelta(hours=24),
    "7 days": timedelta(days=7),
}
DEFAULT_SPAN = "24 hours"

#: Past this span the frequency chart counts per hour: 10,000 minutes draw as a smear.
MINUTE_CHART_MAX = timedelta(hours=24)

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0

#: How the resolution kinds of :mod:`ghstream.queries` read on the page.
KIND_LABELS = {
    "issue": "Issues",
    "pr_merged": "PRs merged",
    "pr_unmerged": "PRs closed unmerged",
}

#: An unknown value in a table cell (Streamlit reads cells as Markdown: "-" draws a bullet).
NONE = "—"

#: What to tell someone looking at an empty dashboard.
HOW_TO_GET_DATA = (
    "Stream live events with `ghstream run`, or replay a recorded hour of GitHub "
    "events with `make demo`; this page refreshes on its own."
)


class DashboardUnavailable(StartupError):
    """PostgreSQL cannot be reached, or refused the connection."""


@dataclass(frozen=True, slots=True)
class Filters:
    """What the sidebar asks for."""

    span: timedelta = SPANS[DEFAULT_SPAN]
    scope: str = ""
    """``owner/name`` for one repository, ``owner`` for an organisation or user; empty: all."""
    include_bots: bool = False
    limit: int = 10
    rank_repos_by: RepoMetric = "events"

    @property
    def repo(self) -> str | None:
        scope = self.scope.strip()
        return scope if "/" in scope else None

    @property
    def org(self) -> str | None:
        scope = self.scope.strip()
        return scope if scope and "/" not in scope else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of every panel; ``newest_event`` is ``None`` when nothing is stored."""

    newest_event: datetime | None
    schema_missing: bool = False
    """The database has no ghstream tables yet (nothing was ever consumed into it)."""
    window: Window | None = None
    frequency: Report[FrequencyPoint] | None = None
    contributors: Report[ContributorRow] | None = None
    repos: Report[RepoRow] | None = None
    resolution: Report[ResolutionRow] | None = None
    read_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def empty(self) -> bool:
        return self.newest_event is None


def data_window(newest: datetime, span: timedelta) -> Window:
    """``span`` of time ending with the minute that holds ``newest``."""
    end = floor_time(newest, timedelta(minutes=1)) + timedelta(minutes=1)
    return Window(start=end - span, end=end)


def chart_granularity(span: timedelta) -> Granularity:
    return "minute" if span <= MINUTE_CHART_MAX else "hour"


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection for one read, or :class:`DashboardUnavailable` saying what to fix."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings={"timezone": "UTC", "application_name": "ghstream-dashboard"},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DashboardUnavailable(
            f"cannot reach PostgreSQL at {redact(dsn)} ({type(exc).__name__}: {exc}). "
            "Start it (`make services`, or `docker compose up -d`) or point "
            "`ghstream dashboard --postgres-dsn` / GHSTREAM_POSTGRES_DSN at yours."
        ) from exc
    return conn


async def load_snapshot(dsn: str, filters: Filters) -> Snapshot:
    """Read every panel for ``filters`` on one short-lived connection."""
    conn = await connect(dsn)
    try:
        return await _read(conn, filters)
    except asyncpg.UndefinedTableError:
        # A database nothing was consumed into yet: the migrations never ran.
        return Snapshot(newest_event=None, schema_missing=True)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise GhstreamError(
            f"reading the dashboard from PostgreSQL failed ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        await conn.close()


async def _read(conn: asyncpg.Connection, filters: Filters) -> Snapshot:
    newest = await queries.newest_event(conn)
    if newest is None:
        return Snapshot(newest_event=None)

    window = data_window(newest, filters.span)
    scope: dict[str, Any] = {"repo": filters.repo, "org": filters.org, "newest": newest}
    frequency = await queries.frequency(conn, window, per=chart_granularity(filters.span), **scope)
    contributors = await queries.top_contributors(
        conn, window, limit=filters.limit, include_bots=filters.include_bots, **scope
    )
    repos = await queries.top_repos(
        conn, window, limit=filters.limit, by=filters.rank_repos_by, **scope
    )
    resolution = await queries.resolution(conn, window, limit=filters.limit, **scope)
    return Snapshot(
        newest_event=newest,
        window=window,
        frequency=frequency,
        contributors=contributors,
        repos=repos,
        resolution=resolution,
    )


# --- shaping reports for the page -----------------------------------------------------------


def event_types(points: Iterable[FrequencyPoint]) -> list[str]:
    """The types present, most events first (the order the chart's legend uses)."""
    totals: dict[str, int] = {}
    for point in points:
        totals[point.type] = totals.get(point.type, 0) + point.events
    return sorted(totals, key=lambda name: (-totals[name], name))


def frequency_rows(
    points: Sequence[FrequencyPoint], types: Sequence[str], granularity: Granularity
) -> list[dict[str, Any]]:
    """Long-format rows ``{time, type, events}`` for ``types`` (all when empty).

    Buckets with no event of a type get a zero between the first and the last
    bucket that has data, so an area chart drops to zero instead of drawing a
    straight line across a quiet minute; the range itself is not padded, so a
    single recorded hour does not sit at the edge of an empty day.
    """
    wanted = set(types) if types else {point.type for point in points}
    chosen = [point for point in points if point.type in wanted]
    if not chosen:
        return []
    step = timedelta(minutes=1) if granularity == "minute" else timedelta(hours=1)
    counts = {(point.bucket, point.type): point.events for point in chosen}
    first = min(point.bucket for point in chosen)
    last = max(point.bucket for point in chosen)
    order = event_types(chosen)

    rows: list[dict[str, Any]] = []
    bucket = first
    while bucket <= last:
        for name in order:
            rows.append({"time": bucket, "type": name, "events": counts.get((bucket, name), 0)})
        bucket += step
    return rows


def contributor_rows(report: Report[ContributorRow]) -> list[dict[str, Any]]:
    return [
        {
            "#": row.rank,
            "contributor": row.login + (" (bot)" if row.is_bot else ""),
            "contributions": row.contributions,
            "pushes": row.pushes,
            "commits": row.commits,
            "PRs opened": row.prs_opened,
            "issues opened": row.issues_opened,
            "reviews": row.reviews,
            "comments": row.review_comments + row.issue_comments + row.commit_comments,
            "repositories": row.repos,
        }
        for row in report.rows
    ]


def repo_rows(report: Report[RepoRow]) -> list[dict[str, Any]]:
    return [
        {
            "#": row.rank,
            "repository": row.repo,
            "events": row.events,
            "actors": row.actors,
            "commits": row.commits,
            "pushes, commits unknown": row.pushes_unknown,
            "stars": row.stars,
            "forks": row.forks,
            "PRs opened": row.prs_opened,
            "issues opened": row.issues_opened,
        }
        for row in report.rows
    ]


def resolution_rows(report: Report[ResolutionRow]) -> list[dict[str, Any]]:
    """One row per repository (all repositories first), items/median/p90 per kind."""
    blank: dict[str, Any] = {}
    for label in KIND_LABELS.values():
        blank |= {f"{label}: items": 0, f"{label}: median": NONE, f"{label}: p90": NONE}

    table: dict[str | None, dict[str, Any]] = {}
    for row in report.rows:
        name = row.repo if row.repo_key is not None else "all repositories"
        line = table.setdefault(row.repo_key, {"repository": name} | blank)
        label = KIND_LABELS.get(row.kind, row.kind)
        line[f"{label}: items"] = row.items
        line[f"{label}: median"] = _duration(row.median_seconds)
        line[f"{label}: p90"] = _duration(row.p90_seconds)
    return list(table.values())


def _duration(seconds: float | None) -> str:
    return NONE if seconds is None else duration(seconds)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def coverage_caption(coverage: Coverage, *, counted: str = "events") -> str:
    """One line under a panel: the range it read and what its numbers stand on."""
    parts = [
        f"{_when(coverage.start)} → {_when(coverage.end)} UTC",
        f"{coverage.events:,} {counted} counted",
    ]
    if coverage.pushes_unknown:
        parts.append(f"{coverage.pushes_unknown:,} pushes with unknown commit counts")
    if coverage.undetermined_items:
        parts.append(f"{coverage.undetermined_items:,} closed items undetermined")
    if coverage.aggregated_until is not None:
        parts.append(f"aggregated up to {_when(coverage.aggregated_until)} UTC")
    return " · ".join(parts)


def coverage_notes(snapshot: Snapshot) -> list[str]:
    """The coverage ``top`` states, for the whole page: range, events, unknowns, gaps, notes."""
    assert snapshot.frequency and snapshot.repos and snapshot.resolution
    assert snapshot.newest_event is not None and snapshot.window is not None
    events = snapshot.frequency.coverage
    repos = snapshot.repos.coverage
    items = snapshot.resolution.coverage
    lines = [
        f"**Range**: {_when(events.start)} → {_when(events.end)} UTC, the "
        f"{_span(snapshot.window.span)} up to the newest stored event "
        f"({snapshot.newest_event.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)",
        f"**Events**: {events.events:,} in range",
        f"**Unknown commits**: {repos.pushes_unknown or 0:,} pushes whose payload carries "
        "no commit count (shown as unknown, never as zero)",
        f"**Undetermined resolutions**: {items.undetermined_items or 0:,} closed issues or "
        "pull requests whose start or outcome is unknown (left out of the times)",
        _gaps(events),
    ]
    if items.aggregated_until is not None:
        lines.append(
            f"**Aggregated** by `ghstream aggregate` up to {_when(items.aggregated_until)} UTC"
        )
    notes = dict.fromkeys(note for report in (events, repos, items) for note in report.notes)
    lines.extend(f"**Note**: {note}" for note in notes)
    return lines


def _gaps(coverage: Coverage) -> str:
    if not coverage.gaps:
        return "**Gaps**: none reported by live ingestion"
    missed = coverage.gaps_estimated_missed
    estimate = f", about {missed:,} events missed" if missed is not None else ""
    return f"**Gaps**: {coverage.gaps:,} reported by live ingestion{estimate}"


def _span(span: timedelta) -> str:
    for label, value in SPANS.items():
        if value == span:
            return label
    return duration(span.total_seconds())
