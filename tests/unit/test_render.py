from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from rich.console import Console

from ghstream import render
from ghstream.queries import (
    ContributorRow,
    Coverage,
    FrequencyPoint,
    RepoRow,
    Report,
    ResolutionRow,
    TypeRow,
)

START = datetime(2015, 1, 1, 12, tzinfo=UTC)


def coverage(**changes: object) -> Coverage:
    base: dict[str, object] = {
        "start": START,
        "end": START + timedelta(hours=1),
        "granularity": "hour",
        "default_window": True,
        "newest_event": START + timedelta(minutes=59, seconds=59),
        "events": 8273,
        "pushes_unknown": 3,
        "gaps": 2,
        "gaps_estimated_missed": 150,
    }
    base.update(changes)
    return Coverage(**base)  # type: ignore[arg-type]


def contributor(rank: int, login: str, **changes: int) -> ContributorRow:
    counts = dict.fromkeys(
        [
            "contributions",
            "pushes",
            "commits",
            "pushes_unknown",
            "prs_opened",
            "issues_opened",
            "reviews",
            "review_comments",
            "issue_comments",
            "commit_comments",
            "repos",
            "events",
        ],
        1,
    )
    counts.update(changes)
    return ContributorRow(rank=rank, login=login, is_bot=login.endswith("[bot]"), **counts)


def repo_row(rank: int, name: str, **changes: int) -> RepoRow:
    counts = dict.fromkeys(
        [
            "events",
            "actors",
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
        ],
        0,
    )
    counts.update(changes)
    return RepoRow(rank=rank, repo=name, repo_key=str(rank), **counts)


def draw(report: Report[object], width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(render.render(report, width=width))
    return console.export_text()


def flat(text: str) -> str:
    """The text with line breaks and runs of spaces folded, for phrases that may wrap."""
    return " ".join(text.split())


def test_contributors_table_at_100_columns() -> None:
    rows = [
        contributor(1, "octocat", contributions=80, pushes=80, commits=120),
        contributor(2, "a-very-long-login-name-that-goes-on-and-on-forever", contributions=7),
    ]

    text = draw(Report("contributors", coverage(), rows))

    lines = text.splitlines()
    assert lines[0].startswith("Top contributors")
    assert max(len(line) for line in lines) <= 100
    assert "octocat" in text
    assert "120" in text
    assert "a-very-long-log…" in text  # cut with an ellipsis, not wrapped
    assert "8,273 events counted" in flat(text)
    assert "3 pushes with unknown commits" in flat(text)
    assert "2 ingest gaps, ~150 events missed" in flat(text)
    assert "the 24 h of data up to the newest event" in flat(text)


def test_narrow_terminal_drops_low_priority_columns() -> None:
    rows = [contributor(1, "octocat", contributions=80)]

    wide = draw(Report("contributors", coverage(), rows), width=160)
    narrow = draw(Report("contributors", coverage(), rows), width=60)

    assert "Com. comm." in wide
    assert "Com. comm." not in narrow
    assert "Contrib." in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 60


def test_unknown_commits_are_never_shown_as_zero() -> None:
    rows = [
        repo_row(1, "torvalds/linux", events=9, pushes=9, commits=0, pushes_unknown=9),
        repo_row(2, "octo/mixed", events=3, pushes=3, commits=5, pushes_unknown=1),
    ]

    text = draw(Report("repos", coverage(), rows))

    linux = next(line for line in text.splitlines() if "torvalds/linux" in line)
    mixed = next(line for line in text.splitlines() if "octo/mixed" in line)
    assert "unknown" in linux
    assert "5+?" in mixed


def test_empty_report_says_so_and_keeps_the_coverage() -> None:
    text = draw(Report("types", coverage(events=0, pushes_unknown=None), []))

    assert "Nothing to show in this range." in text
    assert "0 events counted" in flat(text)


def test_frequency_fills_empty_buckets_and_draws_bars() -> None:
    cov = coverage(granularity="minute", end=START + timedelta(minutes=4))
    points = [
        FrequencyPoint(START, "PushEvent", 4),
        FrequencyPoint(START + timedelta(minutes=3), "PushEvent", 8),
        FrequencyPoint(START + timedelta(minutes=3), "WatchEvent", 1),
    ]

    buckets, series = render.bucket_series(points, cov)
    text = draw(Report("frequency", cov, points))

    assert len(buckets) == 4
    assert series == {"PushEvent": [4, 0, 0, 8], "WatchEvent": [0, 0, 0, 1]}
    assert "Events per minute (UTC)" in text
    assert "│ PushEvent  │     12 │           8 │ ▅▁▁█" in text  # half, none, none, peak
    assert "12:03 9 ████" in text
    assert "12:01 0" in [line.rstrip() for line in text.splitlines()]  # an empty minute


def test_resolution_table_puts_the_overall_row_first() -> None:
    rows = [
        ResolutionRow(None, None, "issue", 3, 3600.0, 7200.0),
        ResolutionRow(None, None, "pr_merged", 2, 90.0, 100.0),
        ResolutionRow("octo/repo", "1", "pr_merged", 2, 90.0, 100.0),
    ]

    text = draw(Report("resolution", coverage(undetermined_items=4, events=9), rows), width=130)

    lines = [line for line in text.splitlines() if "│" in line]
    assert "all repositories" in lines[0]
    assert "1h 00m" in lines[0]
    assert "octo/repo" in lines[1]
    assert "9 closed items counted" in flat(text)
    assert "4 of them undetermined" in flat(text)


def test_json_has_the_documented_fields() -> None:
    report = Report("types", coverage(), [TypeRow(1, "PushEvent", 10, 0.5)])

    data = orjson.loads(orjson.dumps(render.to_json(report)))

    assert data["version"] == 1
    assert data["view"] == "types"
    assert data["coverage"]["start"] == "2015-01-01T12:00:00Z"
    assert set(data["coverage"]) == {
        "start",
        "end",
        "granularity",
        "default_window",
        "newest_event",
        "events",
        "pushes_unknown",
        "undetermined_items",
        "gaps",
        "gaps_estimated_missed",
        "aggregated_until",
        "notes",
    }
    assert data["rows"] == [{"rank": 1, "type": "PushEvent", "events": 10, "share": 0.5}]


def test_csv_has_a_header_and_one_line_per_row() -> None:
    report = Report("contributors", coverage(), [contributor(1, "octocat")])

    lines = render.to_csv(report).splitlines()

    assert lines[0].split(",") == render.row_fields("contributors")
    assert lines[1].startswith("1,octocat,False,")
    assert len(lines) == 2


def test_sparkline_and_bar_scale_to_the_largest_value() -> None:
    assert render.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert render.sparkline([0, 0]) == "▁▁"
    assert render.bar(10, 10, 4) == "████"
    assert render.bar(5, 10, 4) == "██"
    assert render.bar(0, 10, 4) == ""
    assert render.downsample([1, 2, 3, 4, 5], 2) == [6, 9]


def test_duration() -> None:
    assert render.duration(None) == "-"
    assert render.duration(45) == "45s"
    assert render.duration(12 * 60 + 5) == "12m 05s"
    assert render.duration(3 * 3600 + 5 * 60) == "3h 05m"
    assert render.duration(4 * 86400 + 6 * 3600) == "4d 06h"
