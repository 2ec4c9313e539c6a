"""The dashboard page, driven by Streamlit's AppTest against a real PostgreSQL.

The test functions are synchronous on purpose: the page runs its own
``asyncio.run`` for each read, which cannot happen inside a running loop. The
async fixtures store the data first, in pytest-asyncio's loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard_support import event_type_counts, hour_path, store_hour, top_repo_names

from ghstream.dashboard import APP_PATH, DSN_ENV, data
from ghstream.migrate import apply_migrations
from ghstream.model import normalize
from ghstream.sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration

BOT = "renovate[bot]"
BOT_PUSHES = 500  # more than any human's contributions in the hour, one per repository


@pytest.fixture
async def stored_hour(postgres_dsn: str, shared_data: Path) -> str:
    """A database holding the real hour, aggregated, plus one busy bot."""
    await store_hour(postgres_dsn, hour_path(shared_data))
    async with PostgresSink(postgres_dsn) as sink:
        await sink.write_batch([normalize(bot_push(n)) for n in range(BOT_PUSHES)])
    return postgres_dsn


def bot_push(n: int) -> dict[str, Any]:
    return {
        "id": f"99{n:08d}",
        "type": "PushEvent",
        "created_at": f"2015-01-01T12:{n % 60:02d}:00Z",
        "public": True,
        "actor": {"id": 1, "login": BOT},
        "repo": {"id": 990000 + n, "name": f"renovate-sandbox/repo-{n}"},
        "payload": {"size": 1, "distinct_size": 1, "commits": []},
    }


@pytest.fixture
def page_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def page(dsn: str) -> AppTest:
        monkeypatch.setenv(DSN_ENV, dsn)
        at = AppTest.from_file(str(APP_PATH), default_timeout=60)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield page


def table(at: AppTest, heading: str) -> list[dict[str, Any]]:
    """Rows of the table under the subheader that starts with ``heading``."""
    elements = list(at.main)
    for index, element in enumerate(elements):
        if element.type == "subheader" and element.value.startswith(heading):
            following = elements[index + 1 :]
            found = next(e for e in following if e.type in ("table", "subheader"))
            assert found.type == "table", f"no table under {heading!r}"
            rows: list[dict[str, Any]] = found.value.to_dict("records")
            return rows
    raise AssertionError(f"no panel {heading!r}")


def chart_rows(at: AppTest) -> list[dict[str, Any]]:
    """The data behind the frequency chart (Streamlit ships it as Arrow)."""
    [chart] = [e for e in at.main if e.type == "vega_lite_chart"]
    [dataset] = chart.proto.datasets
    rows: list[dict[str, Any]] = pa.ipc.open_stream(dataset.data.data).read_all().to_pylist()
    return rows


@pytest.mark.shared_data
def test_every_panel_renders_the_stored_hour(
    stored_hour: str, shared_data: Path, page_for: Any
) -> None:
    at = page_for(stored_hour)
    raw_types = event_type_counts(hour_path(shared_data))

    points = chart_rows(at)
    per_type: dict[str, int] = {}
    for point in points:
        per_type[point["type"]] = per_type.get(point["type"], 0) + point["events"]
    assert per_type == raw_types + Counter({"PushEvent": BOT_PUSHES})
    assert len({point["time"] for point in points}) == 60  # one hour, per minute

    contributors = table(at, "Top contributors")
    assert len(contributors) == 10
    assert BOT not in {row["contributor"] for row in contributors}
    assert contributors[0]["contributor"] == "KenanSulayman"

    repos = table(at, "Most active repositories")
    expected = top_repo_names(hour_path(shared_data), 3)
    assert [row["repository"] for row in repos[: len(expected)]] == expected
    assert {"events", "commits", "stars", "forks"} <= set(repos[0])

    resolution = table(at, "Time to resolution")
    assert resolution[0]["repository"] == "all repositories"
    assert resolution[0]["Issues: items"] > 0 and resolution[0]["PRs merged: items"] > 0
    assert resolution[0]["PRs merged: median"] not in ("", data.NONE)

    coverage = " ".join(md.value for md in at.markdown)
    events = sum(raw_types.values()) + BOT_PUSHES
    assert f"**Events**: {events:,} in range" in coverage
    assert "**Gaps**: none reported" in coverage
    assert not at.error


@pytest.mark.shared_data
def test_filters_change_what_the_panels_show(stored_hour: str, page_for: Any) -> None:
    at = page_for(stored_hour)

    at.multiselect[0].set_value(["WatchEvent", "ForkEvent"]).run()
    assert {point["type"] for point in chart_rows(at)} == {"WatchEvent", "ForkEvent"}

    at.sidebar.checkbox[0].check().run()
    assert table(at, "Top contributors")[0]["contributor"] == f"{BOT} (bot)"

    by_events = table(at, "Most active repositories (by events)")
    at.sidebar.radio[0].set_value("commits").run()
    by_commits = table(at, "Most active repositories (by commits)")
    commits = [row["commits"] for row in by_commits]
    assert commits == sorted(commits, reverse=True)
    assert commits[0] >= 104  # mquinson/PLM-data pushed 104 commits in 49 pushes
    assert [r["repository"] for r in by_commits] != [r["repository"] for r in by_events]

    at.sidebar.text_input[0].input("kaltura").run()
    repos = table(at, "Most active repositories")
    assert repos and all(row["repository"].startswith("kaltura/") for row in repos)
    everything = sum(point["events"] for point in chart_rows(at))
    assert 0 < everything < 600

    at.sidebar.text_input[0].input("no-such-owner-anywhere").run()
    assert "No repository activity in this window." in [info.value for info in at.info]
    assert any("no stored repository matches" in md.value for md in at.markdown)


@pytest.mark.shared_data
def test_a_shorter_window_counts_fewer_events(stored_hour: str, page_for: Any) -> None:
    at = page_for(stored_hour)
    whole = sum(point["events"] for point in chart_rows(at))

    at.sidebar.selectbox[0].set_value("15 minutes").run()
    quarter = chart_rows(at)
    assert {point["time"] for point in quarter} == {
        f"2015-01-01T12:{minute:02d}:00+00:00" for minute in range(45, 60)
    }
    assert 0 < sum(point["events"] for point in quarter) < whole


async def test_empty_database_says_no_data_yet(postgres_dsn: str, page_for: Any) -> None:
    await apply_migrations(postgres_dsn)
    await check_no_data(postgres_dsn, page_for, "PostgreSQL holds no events yet")


async def test_database_without_schema_says_no_data_yet(postgres_dsn: str, page_for: Any) -> None:
    await check_no_data(postgres_dsn, page_for, "no ghstream tables yet")


async def check_no_data(dsn: str, page_for: Any, why: str) -> None:
    # AppTest runs the page's own asyncio.run: outside this test's running loop.
    import asyncio

    at = await asyncio.to_thread(page_for, dsn)
    [info] = at.info
    assert "No data yet" in info.value and why in info.value
    assert "ghstream run" in info.value and "make demo" in info.value
    assert not at.error and not at.table

    # The page holds no connection between reads (autovacuum, which visits the freshly
    # migrated database now and then, is not a client).
    conn = await asyncpg.connect(dsn)
    try:
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
    finally:
        await conn.close()
    assert others == 0
