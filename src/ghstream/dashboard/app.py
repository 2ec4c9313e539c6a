"""The Streamlit page that ``ghstream dashboard`` serves.

Run by ``streamlit run`` (see ``ghstream.commands.dashboard``), which executes
this file top to bottom on every interaction. The filters live in the
sidebar; the panels sit in a fragment that re-reads PostgreSQL every few
seconds on its own, so the page follows ``ghstream run`` while it streams
without redrawing the filters. Each read opens one connection, runs the
queries of :mod:`ghstream.queries` through :mod:`ghstream.dashboard.data`, and
closes it: a dashboard left open holds no connection between refreshes.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import altair as alt
import streamlit as st

from ghstream.config import DEFAULT_POSTGRES_DSN
from ghstream.dashboard import DEFAULT_REFRESH_S, DSN_ENV, REFRESH_ENV, data
from ghstream.errors import GhstreamError
from ghstream.logs import redact
from ghstream.queries import ContributorRow, FrequencyPoint, RepoRow, Report, ResolutionRow

REFRESH_CHOICES = {"off": 0.0, "every 5 s": 5.0, "every 15 s": 15.0, "every 60 s": 60.0}


def main() -> None:
    st.set_page_config(page_title="ghstream dashboard", layout="wide")
    dsn = os.environ.get(DSN_ENV) or DEFAULT_POSTGRES_DSN
    filters, refresh_s = sidebar(dsn)

    st.title("GitHub activity")
    run_every = timedelta(seconds=refresh_s) if refresh_s else None
    st.fragment(panels, run_every=run_every)(dsn, filters)


def sidebar(dsn: str) -> tuple[data.Filters, float]:
    """The filters, and the seconds between refreshes (0: off)."""
    bar = st.sidebar
    bar.header("Filters")
    spans = list(data.SPANS)
    span = bar.selectbox(
        "Time window",
        spans,
        index=spans.index(data.DEFAULT_SPAN),
        help="How much time to show, ending at the newest stored event.",
    )
    scope = bar.text_input(
        "Repository or organisation",
        placeholder="owner/name or owner",
        help="`owner/name` shows one repository, `owner` every repository of that owner.",
    )
    include_bots = bar.checkbox(
        "Include bots", help="Bots (logins ending in [bot]) are left out of rankings by default."
    )
    rank_by = bar.radio("Rank repositories by", ["events", "commits"], horizontal=True)
    limit = bar.slider("Rows per ranking", min_value=5, max_value=50, value=10, step=5)

    choices = list(REFRESH_CHOICES)
    refresh = bar.selectbox(
        "Refresh", choices, index=choices.index(default_refresh()), help="Re-read PostgreSQL."
    )
    bar.caption(f"PostgreSQL: `{redact(dsn)}`")

    filters = data.Filters(
        span=data.SPANS[span],
        scope=scope,
        include_bots=include_bots,
        limit=limit,
        rank_repos_by="commits" if rank_by == "commits" else "events",
    )
    return filters, REFRESH_CHOICES[refresh]


def default_refresh() -> str:
    """The refresh choice closest to $GHSTREAM_DASHBOARD_REFRESH_S (0 turns it off)."""
    try:
        wanted = float(os.environ.get(REFRESH_ENV, DEFAULT_REFRESH_S))
    except ValueError:
        wanted = DEFAULT_REFRESH_S
    return min(REFRESH_CHOICES, key=lambda name: abs(REFRESH_CHOICES[name] - wanted))


def panels(dsn: str, filters: data.Filters) -> None:
    """Every panel, from one read of PostgreSQL."""
    try:
        snapshot = asyncio.run(data.load_snapshot(dsn, filters))
    except data.DashboardUnavailable as exc:
        st.error(f"**PostgreSQL is unreachable**: {exc}")
        return
    except GhstreamError as exc:
        st.error(str(exc))
        return

    if snapshot.empty:
        no_data(snapshot)
        return
    assert snapshot.frequency and snapshot.contributors and snapshot.repos
    assert snapshot.resolution

    frequency_panel(snapshot.frequency)
    contributors_panel(snapshot.contributors)
    repos_panel(snapshot.repos, filters)
    resolution_panel(snapshot.resolution)
    st.subheader("Coverage")
    st.markdown("\n".join(f"- {line}" for line in data.coverage_notes(snapshot)))
    st.caption(f"Read at {snapshot.read_at:%H:%M:%S} UTC.")


def no_data(snapshot: data.Snapshot) -> None:
    why = (
        "this database has no ghstream tables yet"
        if snapshot.schema_missing
        else "PostgreSQL holds no events yet"
    )
    st.info(f"**No data yet**: {why}. {data.HOW_TO_GET_DATA}")


def frequency_panel(report: Report[FrequencyPoint]) -> None:
    per = report.coverage.granularity
    st.subheader(f"Events per {per} by type")
    present = data.event_types(report.rows)
    chosen = st.multiselect(
        "Event types", present, placeholder="All event types", help="Empty: every type."
    )
    rows = data.frequency_rows(report.rows, chosen, per)
    if rows:
        st.altair_chart(frequency_chart(rows, per), width="stretch")
    else:
        st.info("No events of these types in this window.")
    st.caption(data.coverage_caption(report.coverage))


def frequency_chart(rows: list[dict[str, Any]], per: str) -> alt.Chart:
    """A stacked area per type; times drawn in UTC whatever the browser's time zone."""
    values = [row | {"time": row["time"].isoformat()} for row in rows]
    legend_order = list(dict.fromkeys(row["type"] for row in rows))
    chart: alt.Chart = (
        alt.Chart({"values": values})
        .mark_area()
        .encode(
            x=alt.X(
                "time:T",
                title=f"{per} (UTC)",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%H:%M" if per == "minute" else "%b %d %H:%M"),
            ),
            y=alt.Y("events:Q", title=f"events per {per}", stack="zero"),
            color=alt.Color(
                "type:N", title="type", sort=legend_order, scale=alt.Scale(scheme="tableau20")
            ),
            tooltip=[
                alt.Tooltip(
                    "time:T",
                    title="UTC",
                    timeUnit="utcyearmonthdatehoursminutes",
                    format="%Y-%m-%d %H:%M",
                ),
                alt.Tooltip("type:N"),
                alt.Tooltip("events:Q"),
            ],
        )
        .properties(height=320)
    )
    return chart


def contributors_panel(report: Report[ContributorRow]) -> None:
    st.subheader("Top contributors")
    rows = data.contributor_rows(report)
    if rows:
        st.table(rows, hide_index=True)
    else:
        st.info("No contributions in this window.")
    st.caption(
        "Contributions: pushes, pull requests and issues opened, reviews and comments. "
        + data.coverage_caption(report.coverage)
    )


def repos_panel(report: Report[RepoRow], filters: data.Filters) -> None:
    st.subheader(f"Most active repositories (by {filters.rank_repos_by})")
    rows = data.repo_rows(report)
    if rows:
        st.table(rows, hide_index=True)
    else:
        st.info("No repository activity in this window.")
    st.caption(data.coverage_caption(report.coverage))


def resolution_panel(report: Report[ResolutionRow]) -> None:
    st.subheader("Time to resolution (median and p90)")
    rows = data.resolution_rows(report)
    if rows:
        st.table(rows, hide_index=True)
    else:
        st.info(
            "No issue or pull request was resolved in this window"
            " (resolutions are computed by `ghstream aggregate`)."
        )
    st.caption(
        "Issues and pull requests closed in the window, from first open to final close. "
        + data.coverage_caption(report.coverage, counted="closed items")
    )


if __name__ == "__main__":
    main()
