"""Turning :mod:`ghstream.queries` reports into terminal tables, JSON and CSV.

Tables fit the console width: each column has a priority, and the
lowest-priority columns are dropped until the rest fit. JSON and CSV carry
every field, with the names documented in README.md (``ghstream top``, Output fields):

* JSON: ``{"version": 1, "view", "coverage": {...}, "rows": [...]}``;
* CSV: a header line and one line per row, the row fields only (the coverage
  goes to stderr).

Times are ISO 8601 in UTC with a ``Z``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ghstream.queries import (
    ContributorRow,
    Coverage,
    FrequencyPoint,
    RepoRow,
    Report,
    ResolutionRow,
    TypeRow,
)
from ghstream.timewindow import Granularity

#: Version of the JSON layout; bumped only when a field changes meaning or goes away.
JSON_VERSION = 1

_SPARKS = "▁▂▃▄▅▆▇█"
_STEPS: dict[Granularity, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
}
_KIND_TITLES = {
    "issue": "Issues",
    "pr_merged": "Merged PRs",
    "pr_unmerged": "PRs closed unmerged",
}

# --- machine-readable ------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _record(item: Any) -> dict[str, Any]:
    assert is_dataclass(item) and not isinstance(item, type)
    return {name: _plain(value) for name, value in asdict(item).items()}


def to_json(report: Report[Any]) -> dict[str, Any]:
    """The report as a JSON-ready mapping with stable field names."""
    return {
        "version": JSON_VERSION,
        "view": report.view,
        "coverage": _record(report.coverage),
        "rows": [_record(row) for row in report.rows],
    }


#: Row fields per view, in column order; CSV headers and JSON row keys.
ROW_TYPES: dict[str, type] = {
    "contributors": ContributorRow,
    "repos": RepoRow,
    "commits": RepoRow,
    "types": TypeRow,
    "frequency": FrequencyPoint,
    "resolution": ResolutionRow,
}


def row_fields(view: str) -> list[str]:
    """The documented row fields of ``view``."""
    return [f.name for f in fields(ROW_TYPES[view])]


def to_csv(report: Report[Any]) -> str:
    """The report's rows as CSV with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=row_fields(report.view), lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({k: "" if v is None else v for k, v in _record(row).items()})
    return out.getvalue()


# --- small text pieces -----------------------------------------------------


def sparkline(values: Sequence[int]) -> str:
    """One block character per value, scaled from zero to the largest value."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _SPARKS[0] * len(values)
    last = len(_SPARKS) - 1
    return "".join(_SPARKS[0 if v <= 0 else max(1, round(v / top * last))] for v in values)


def bar(value: int, maximum: int, width: int) -> str:
    """A horizontal bar of ``width`` cells at most, in eighths of a cell."""
    if maximum <= 0 or value <= 0 or width <= 0:
        return ""
    eighths = round(value / maximum * width * 8)
    full, rest = divmod(max(eighths, 1), 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")


def downsample(values: Sequence[int], width: int) -> list[int]:
    """``values`` summed into at most ``width`` consecutive groups."""
    if width <= 0:
        return []
    if len(values) <= width:
        return list(values)
    size = -(-len(values) // width)  # ceiling division
    return [sum(values[i : i + size]) for i in range(0, len(values), size)]


def duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``12m 05s``, ``3h 05m``, ``4d 06h``."""
    if seconds is None:
        return "-"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _n(value: int) -> str:
    return f"{value:,}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


# --- coverage --------------------------------------------------------------


def coverage_text(coverage: Coverage) -> Text:
    """The line under every view: range, events counted, unknowns, gaps, notes."""
    text = Text(style="dim")
    text.append(f"{_when(coverage.start)} → {_when(coverage.end)} UTC")
    if coverage.default_window and coverage.newest_event is not None:
        text.append(
            f" (the 24 h of data up to the newest event, {_when(coverage.newest_event)};"
            " --since/--until choose)"
        )
    elif coverage.default_window:
        text.append(" (24 h before --until; --since chooses)")
    # The resolution view counts closed items rather than events.
    noun = "closed items" if coverage.undetermined_items is not None else "events"
    parts = [f"{_n(coverage.events)} {noun} counted"]
    if coverage.pushes_unknown is not None:
        parts.append(f"{_n(coverage.pushes_unknown)} pushes with unknown commits")
    if coverage.undetermined_items is not None:
        parts.append(f"{_n(coverage.undetermined_items)} of them undetermined")
    if coverage.gaps:
        missed = (
            f", ~{_n(coverage.gaps_estimated_missed)} events missed"
            if coverage.gaps_estimated_missed is not None
            else ""
        )
        parts.append(f"{_n(coverage.gaps)} ingest gaps{missed}")
    else:
        parts.append("no ingest gaps reported")
    if coverage.aggregated_until is not None:
        parts.append(f"aggregated up to {_when(coverage.aggregated_until)}")
    text.append(" · " + " · ".join(parts))
    for note in coverage.notes:
        text.append(f"\nnote: {note}", style="yellow")
    return text


# --- tables ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: header, cell text, and how readily it is dropped when narrow."""

    header: str
    cell: Callable[[Any], str]
    priority: int = 1
    """1 is always shown; higher numbers are dropped first."""
    justify: str = "right"
    shrinks: bool = False
    """Names: may be cut with an ellipsis instead of being dropped."""


def fit_table(title: str, columns: Sequence[Column], rows: Sequence[Any], *, width: int) -> Table:
    """A table of ``rows`` with as many of ``columns`` as fit in ``width`` cells."""
    cells = {id(c): [c.cell(row) for row in rows] for c in columns}

    def need(column: Column) -> int:
        widest = max((len(cell) for cell in cells[id(column)]), default=0)
        natural = max(len(column.header), widest)
        return (min(natural, 12) if column.shrinks else natural) + 3

    chosen: set[int] = set()
    used = 1
    for column in sorted(columns, key=lambda c: c.priority):
        if column.priority == 1 or used + need(column) <= width:
            chosen.add(id(column))
            used += need(column)

    kept = [c for c in columns if id(c) in chosen]
    fixed = sum(need(c) for c in kept if not c.shrinks)
    shrinking = [c for c in kept if c.shrinks]
    # Names take what the numbers leave, and are cut with an ellipsis beyond that.
    name_width = max((width - 1 - fixed) // max(len(shrinking), 1) - 3, 12)

    table = Table(title=title, title_justify="left", expand=False, header_style="bold")
    for column in kept:
        table.add_column(
            column.header,
            justify="left" if column.justify == "left" else "right",
            overflow="ellipsis",
            no_wrap=True,
            max_width=name_width if column.shrinks else None,
        )
    for index in range(len(rows)):
        table.add_row(*(cells[id(c)][index] for c in kept))
    return table


def _commits(row: ContributorRow | RepoRow) -> str:
    if row.pushes_unknown and row.pushes_unknown == row.pushes:
        return "unknown"
    return _n(row.commits) + ("+?" if row.pushes_unknown else "")


_CONTRIBUTOR_COLUMNS = (
    Column("#", lambda r: str(r.rank)),
    Column("Contributor", lambda r: r.login + (" (bot)" if r.is_bot else ""), 1, "left", True),
    Column("Contrib.", lambda r: _n(r.contributions)),
    Column("Pushes", lambda r: _n(r.pushes), 2),
    Column("Commits", _commits, 2),
    Column("PRs", lambda r: _n(r.prs_opened), 2),
    Column("Issues", lambda r: _n(r.issues_opened), 2),
    Column("Reviews", lambda r: _n(r.reviews), 3),
    Column("Rev. comm.", lambda r: _n(r.review_comments), 4),
    Column("Iss. comm.", lambda r: _n(r.issue_comments), 3),
    Column("Com. comm.", lambda r: _n(r.commit_comments), 5),
    Column("Repos", lambda r: _n(r.repos), 2),
    Column("Unknown pushes", lambda r: _n(r.pushes_unknown), 4),
)
_REPO_COLUMNS = (
    Column("#", lambda r: str(r.rank)),
    Column("Repository", lambda r: r.repo, 1, "left", True),
    Column("Events", lambda r: _n(r.events)),
    Column("Actors", lambda r: _n(r.actors), 2),
    Column("Pushes", lambda r: _n(r.pushes), 2),
    Column("Commits", _commits, 2),
    Column("PRs opened", lambda r: _n(r.prs_opened), 3),
    Column("Merged", lambda r: _n(r.prs_merged), 3),
    Column("Unmerged", lambda r: _n(r.prs_closed), 5),
    Column("Issues opened", lambda r: _n(r.issues_opened), 4),
    Column("Closed", lambda r: _n(r.issues_closed), 5),
    Column("Stars", lambda r: _n(r.stars), 3),
    Column("Forks", lambda r: _n(r.forks), 4),
    Column("Releases", lambda r: _n(r.releases), 5),
)
_COMMIT_COLUMNS = (
    Column("#", lambda r: str(r.rank)),
    Column("Repository", lambda r: r.repo, 1, "left", True),
    Column("Known commits", lambda r: _n(r.commits)),
    Column("Pushes", lambda r: _n(r.pushes)),
    Column("Pushes, unknown commits", lambda r: _n(r.pushes_unknown)),
    Column("Events", lambda r: _n(r.events), 3),
)
_TYPE_COLUMNS = (
    Column("#", lambda r: str(r.rank)),
    Column("Type", lambda r: r.type, 1, "left", True),
    Column("Events", lambda r: _n(r.events)),
    Column("Share", lambda r: f"{r.share:.1%}"),
)


def render(report: Report[Any], *, width: int) -> RenderableType:
    """The report as a table (or chart) sized to ``width``, with its coverage line."""
    if report.view == "frequency":
        body = render_frequency(report, width=width)
    elif report.view == "resolution":
        body = render_resolution(report, width=width)
    else:
        title, columns = {
            "contributors": ("Top contributors", _CONTRIBUTOR_COLUMNS),
            "repos": ("Most active repositories", _REPO_COLUMNS),
            "commits": ("Repositories by known commits", _COMMIT_COLUMNS),
            "types": ("Events by type", _TYPE_COLUMNS),
        }[report.view]
        body = fit_table(title, columns, report.rows, width=width)
    if not report.rows:
        body = Text("Nothing to show in this range.", style="bold")
    return Group(body, coverage_text(report.coverage))


def bucket_series(
    points: Iterable[FrequencyPoint], coverage: Coverage
) -> tuple[list[datetime], dict[str, list[int]]]:
    """Every bucket of the covered range, and each type's count per bucket (zeros filled)."""
    step = _STEPS[coverage.granularity]
    buckets: list[datetime] = []
    moment = coverage.start
    while moment < coverage.end:
        buckets.append(moment)
        moment += step
    index = {bucket: i for i, bucket in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    for point in points:
        slot = index.get(point.bucket)
        if slot is not None:
            series.setdefault(point.type, [0] * len(buckets))[slot] += point.events
    return buckets, series


def render_frequency(report: Report[Any], *, width: int, bars_max: int = 48) -> RenderableType:
    """Per type: total, peak and a sparkline; then a bar per bucket when they are few."""
    buckets, series = bucket_series(report.rows, report.coverage)
    totals = [sum(values) for values in zip(*series.values(), strict=True)] if series else []
    ordered = sorted(series.items(), key=lambda item: (-sum(item[1]), item[0]))
    per = report.coverage.granularity

    name_width = max((len(name) for name, _ in ordered), default=4)
    spark_width = max(width - name_width - 32, 8)
    table = Table(title=f"Events per {per} (UTC)", title_justify="left", header_style="bold")
    table.add_column("Type", overflow="ellipsis", no_wrap=True)
    table.add_column("Events", justify="right")
    table.add_column(f"Peak/{per}", justify="right")
    table.add_column(f"{_when(buckets[0]) if buckets else ''} …", no_wrap=True)
    table.add_row(
        "all",
        _n(sum(totals)),
        _n(max(totals, default=0)),
        sparkline(downsample(totals, spark_width)),
        style="bold",
    )
    for name, values in ordered:
        table.add_row(
            name, _n(sum(values)), _n(max(values)), sparkline(downsample(values, spark_width))
        )
    if not 0 < len(buckets) <= bars_max:
        return table

    label = "%H:%M" if buckets[0].date() == buckets[-1].date() else "%m-%d %H:%M"
    peak = max(totals, default=0)
    chart = Table.grid(padding=(0, 1))
    chart.add_column(no_wrap=True)
    chart.add_column(justify="right")
    chart.add_column(no_wrap=True)
    for bucket, total in zip(buckets, totals, strict=True):
        chart.add_row(bucket.strftime(label), _n(total), bar(total, peak, max(width - 24, 8)))
    return Group(table, chart)


def render_resolution(report: Report[Any], *, width: int) -> RenderableType:
    """One line per repository (overall first): items, median and p90 for each kind."""
    by_repo: dict[str | None, dict[str, ResolutionRow]] = {}
    names: dict[str | None, str] = {}
    for row in report.rows:
        by_repo.setdefault(row.repo_key, {})[row.kind] = row
        names[row.repo_key] = row.repo or "all repositories"

    table = Table(title="Time to resolution", title_justify="left", header_style="bold")
    table.add_column("Repository", overflow="ellipsis", no_wrap=True, min_width=12)
    numbers = {"justify": "right", "no_wrap": True}
    narrow = width < 120
    for title in _KIND_TITLES.values():
        short = title.split()[0] if narrow else title
        table.add_column(f"{short}\nn", **numbers)  # type: ignore[arg-type]
        table.add_column("median", **numbers)  # type: ignore[arg-type]
        if not narrow:
            table.add_column("p90", **numbers)  # type: ignore[arg-type]
    for key, kinds in by_repo.items():
        cells = [names[key]]
        for kind in _KIND_TITLES:
            row = kinds.get(kind)
            cells.append(_n(row.items) if row else "0")
            cells.append(duration(row.median_seconds) if row else "-")
            if not narrow:
                cells.append(duration(row.p90_seconds) if row else "-")
        table.add_row(*cells, style="bold" if key is None else None)
    return table
