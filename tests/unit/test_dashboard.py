"""`ghstream dashboard` without a database: shaping reports, the command, the unreachable page."""

from __future__ import annotations

import importlib.util
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ghstream.cli import app
from ghstream.commands import dashboard as command
from ghstream.dashboard import APP_PATH, DSN_ENV, data
from ghstream.errors import ConfigError
from ghstream.queries import Coverage, FrequencyPoint, Report, ResolutionRow
from ghstream.render import duration

T0 = datetime(2015, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def coverage(**extra: object) -> Coverage:
    fields: dict[str, object] = {
        "start": T0,
        "end": T0 + timedelta(hours=1),
        "granularity": "minute",
        "default_window": False,
        "newest_event": T0 + timedelta(minutes=59),
        "events": 1234,
    }
    return Coverage(**(fields | extra))  # type: ignore[arg-type]


# --- filters and window -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "repo", "org"),
    [
        pytest.param("", None, None, id="empty"),
        pytest.param("  ", None, None, id="blank"),
        pytest.param("kaltura", None, "kaltura", id="owner"),
        pytest.param(" kaltura/mwEmbed ", "kaltura/mwEmbed", None, id="repository"),
    ],
)
def test_scope_is_a_repository_with_a_slash_else_an_owner(
    scope: str, repo: str | None, org: str | None
) -> None:
    filters = data.Filters(scope=scope)
    assert (filters.repo, filters.org) == (repo, org)


def test_window_ends_with_the_minute_of_the_newest_event() -> None:
    window = data.data_window(T0 + timedelta(minutes=59, seconds=59), timedelta(hours=1))
    assert (window.start, window.end) == (T0, T0 + timedelta(hours=1))
    assert not window.defaulted


def test_chart_counts_per_minute_up_to_a_day_then_per_hour() -> None:
    assert data.chart_granularity(data.SPANS["24 hours"]) == "minute"
    assert data.chart_granularity(data.SPANS["7 days"]) == "hour"


# --- shaping ----------------------------------------------------------------------------------


def test_frequency_rows_fill_quiet_minutes_with_zero_inside_the_data_only() -> None:
    points = [
        FrequencyPoint(T0, "PushEvent", 5),
        FrequencyPoint(T0 + 2 * MINUTE, "PushEvent", 3),
        FrequencyPoint(T0 + 2 * MINUTE, "WatchEvent", 9),
    ]
    rows = data.frequency_rows(points, [], "minute")

    # WatchEvent has more events in all, so it comes first in every minute.
    assert rows == [
        {"time": T0, "type": "WatchEvent", "events": 0},
        {"time": T0, "type": "PushEvent", "events": 5},
        {"time": T0 + MINUTE, "type": "WatchEvent", "events": 0},
        {"time": T0 + MINUTE, "type": "PushEvent", "events": 0},
        {"time": T0 + 2 * MINUTE, "type": "WatchEvent", "events": 9},
        {"time": T0 + 2 * MINUTE, "type": "PushEvent", "events": 3},
    ]


def test_frequency_rows_keep_only_the_chosen_types() -> None:
    points = [FrequencyPoint(T0, "PushEvent", 5), FrequencyPoint(T0, "WatchEvent", 1)]
    assert data.frequency_rows(points, ["WatchEvent"], "minute") == [
        {"time": T0, "type": "WatchEvent", "events": 1}
    ]
    assert data.frequency_rows(points, ["ForkEvent"], "minute") == []


def test_resolution_rows_pivot_kinds_with_all_repositories_first() -> None:
    report = Report(
        "resolution",
        coverage(),
        [
            ResolutionRow(None, None, "issue", 3, 90.0, 7200.0),
            ResolutionRow(None, None, "pr_merged", 1, 86400 * 2 + 3600.0, None),
            ResolutionRow("octo/cat", "42", "issue", 2, 45.0, 60.0),
        ],
    )
    rows = data.resolution_rows(report)

    assert [row["repository"] for row in rows] == ["all repositories", "octo/cat"]
    assert rows[0]["Issues: items"] == 3
    # Durations read the way `top` prints them.
    assert (rows[0]["Issues: median"], rows[0]["Issues: p90"]) == (duration(90), duration(7200))
    assert rows[0]["PRs merged: median"] == duration(86400 * 2 + 3600)
    assert rows[0]["PRs merged: p90"] == data.NONE
    # A kind with no item in a repository reads as none, not as a zero duration.
    assert rows[1]["PRs merged: items"] == 0
    assert rows[1]["PRs merged: median"] == data.NONE


def test_coverage_caption_states_range_events_and_unknowns() -> None:
    caption = data.coverage_caption(coverage(pushes_unknown=7, undetermined_items=2))
    assert caption == (
        "2015-01-01 12:00 → 2015-01-01 13:00 UTC · 1,234 events counted"
        " · 7 pushes with unknown commit counts · 2 closed items undetermined"
    )


def test_coverage_notes_name_gaps_and_notes() -> None:
    cov = coverage(gaps=2, gaps_estimated_missed=300, notes=("no stored repository matches x",))
    empty: Report[object] = Report("x", cov)
    snapshot = data.Snapshot(
        newest_event=T0,
        window=data.data_window(T0, timedelta(hours=1)),
        frequency=empty,  # type: ignore[arg-type]
        contributors=empty,  # type: ignore[arg-type]
        repos=empty,  # type: ignore[arg-type]
        resolution=empty,  # type: ignore[arg-type]
    )
    notes = data.coverage_notes(snapshot)
    assert "**Gaps**: 2 reported by live ingestion, about 300 events missed" in notes
    assert notes.count("**Note**: no stored repository matches x") == 1
    assert notes[0].startswith("**Range**: 2015-01-01 12:00 → 2015-01-01 13:00 UTC, the 1 hour")


# --- the command ------------------------------------------------------------------------------


def test_without_the_extra_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def no_streamlit(name: str, *args: object) -> object:
        return None if name == "streamlit" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(command.importlib.util, "find_spec", no_streamlit)
    result = CliRunner().invoke(app, ["dashboard"])

    assert result.exit_code == 1
    assert "pipx install 'ghstream[dashboard]'" in result.output
    assert "pipx inject ghstream streamlit" in result.output


def test_streamlit_command_line_carries_no_dsn() -> None:
    line = command.streamlit_command("127.0.0.1", 8501)
    assert line[1:5] == ["-m", "streamlit", "run", str(APP_PATH)]
    assert "--server.address" in line and "127.0.0.1" in line
    assert not any("postgres" in part for part in line)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert command.is_loopback(host) is loopback


def test_a_port_in_use_is_a_usage_error_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="--port"):
            command.check_port_free("127.0.0.1", port)


def test_help_explains_the_dashboard() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "pipx install 'ghstream[dashboard]'" in result.output
    assert "--host" in result.output


# --- the page when PostgreSQL is down (no service needed) ------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_unreachable_postgres_is_a_message_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    dsn = f"postgresql://ghstream:s3cret@127.0.0.1:{closed_port()}/ghstream"
    monkeypatch.setenv(DSN_ENV, dsn)
    page = AppTest.from_file(str(Path(APP_PATH)), default_timeout=30).run()

    assert not page.exception
    [error] = page.error
    assert "PostgreSQL is unreachable" in error.value
    assert "GHSTREAM_POSTGRES_DSN" in error.value
    assert "s3cret" not in error.value
    assert "s3cret" not in " ".join(caption.value for caption in page.sidebar.caption)
