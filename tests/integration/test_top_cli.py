"""`ghstream top` and `ghstream aggregate` from the command line: output, messages, exit codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import orjson
import pytest
from test_top_archive import store
from test_top_cases import event, push
from typer.testing import CliRunner

from ghstream import render
from ghstream.cli import app
from ghstream.commands.top import default_watch_value
from ghstream.migrate import apply_migrations

pytestmark = pytest.mark.integration

RANGE = ["--since", "2026-05-01", "--until", "2026-05-02"]


def run(*args: str, columns: int = 100) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def small_dsn(postgres_dsn: str) -> str:
    """A database with a few written events, aggregated."""
    raws = [
        push(1, 0),
        push(2, 1, login="bob", size=5),
        push(3, 2, login="dependabot[bot]"),
        event(4, "WatchEvent", 3, login="carol", payload={"action": "started"}),
        event(5, "IssuesEvent", 4, payload={"action": "opened", "issue": {"number": 7}}),
        event(6, "IssuesEvent", 64, payload={"action": "closed", "issue": {"number": 7}}),
    ]
    asyncio.run(store(postgres_dsn, raws))
    code, _, err = run("aggregate", "--postgres-dsn", postgres_dsn)
    assert code == 0, err
    return postgres_dsn


def test_unreachable_postgres_exits_3_naming_the_flag_and_hiding_the_password() -> None:
    dsn = "postgresql://ghstream:s3cret-pw@127.0.0.1:1/ghstream"

    code, out, err = run("top", "--postgres-dsn", dsn)

    assert code == 3
    assert out == ""
    assert "StartupError" in err
    assert "--postgres-dsn" in err and "GHSTREAM_POSTGRES_DSN" in err
    assert "s3cret-pw" not in err
    assert "ghstream:***@127.0.0.1:1" in err


def test_aggregate_unreachable_postgres_exits_3() -> None:
    code, _, err = run("aggregate", "--postgres-dsn", "postgresql://x:pw@127.0.0.1:1/x")

    assert code == 3
    assert "pw@" not in err


def test_database_without_tables_exits_0_with_a_message(postgres_dsn: str) -> None:
    code, out, err = run("top", "--postgres-dsn", postgres_dsn)

    assert code == 0
    assert out == ""
    assert "no ghstream tables yet" in " ".join(err.split())


def test_empty_database_exits_0_with_a_message(postgres_dsn: str) -> None:
    asyncio.run(apply_migrations(postgres_dsn))

    code, out, err = run("top", "--repos", "--postgres-dsn", postgres_dsn)

    assert code == 0
    assert out == ""
    assert "holds no events yet" in " ".join(err.split())


def test_no_events_in_range_exits_0_and_says_where_the_data_is(small_dsn: str) -> None:
    code, out, err = run("top", "--since", "2h", "--postgres-dsn", small_dsn)

    assert code == 0
    assert "Nothing to show in this range." in out
    message = " ".join(err.split())
    assert "No events between" in message
    assert "newest stored event is from 2026-05-01 11:04 UTC" in message


def test_an_unknown_repository_is_explained_once(small_dsn: str) -> None:
    code, out, err = run("top", "--repos", "--repo", "no/such", *RANGE, "--postgres-dsn", small_dsn)

    assert code == 0
    text = " ".join((out + err).split())
    assert "no stored repository matches --repo no/such" in text
    assert "No events between" not in text


def test_table_at_a_fixed_width(small_dsn: str) -> None:
    code, out, _ = run("top", "--contributors", *RANGE, "--postgres-dsn", small_dsn, columns=100)

    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("Top contributors")
    assert max(len(line) for line in lines) <= 100
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["alice", "bob"]
    assert "dependabot" not in out
    assert "5 events counted" in " ".join(out.split())  # alice 3, bob 1, carol 1; no bots


@pytest.mark.parametrize(
    "view", ["contributors", "repos", "commits", "types", "frequency", "resolution"]
)
def test_json_has_the_documented_fields(small_dsn: str, view: str) -> None:
    code, out, _ = run("top", f"--{view}", *RANGE, "--json", "--postgres-dsn", small_dsn)

    data = orjson.loads(out)
    assert code == 0
    assert data["version"] == 1
    assert data["view"] == view
    assert data["coverage"]["start"] == "2026-05-01T00:00:00Z"
    assert data["rows"], out
    for row in data["rows"]:
        assert list(row) == render.row_fields(view)


def test_bots_file_and_include_bots(small_dsn: str, tmp_path: Path) -> None:
    bots = tmp_path / "bots.txt"
    bots.write_text("# our automation\nBOB\n", encoding="utf-8")

    _, default, _ = run(
        "top", *RANGE, "--json", "--bots-file", str(bots), "--postgres-dsn", small_dsn
    )
    _, everyone, _ = run(
        "top",
        *RANGE,
        "--json",
        "--include-bots",
        "--bots-file",
        str(bots),
        "--postgres-dsn",
        small_dsn,
    )

    assert [r["login"] for r in orjson.loads(default)["rows"]] == ["alice"]
    assert [r["login"] for r in orjson.loads(everyone)["rows"]] == [
        "alice",
        "bob",
        "dependabot[bot]",
    ]


def test_csv_rows_on_stdout_coverage_on_stderr(small_dsn: str) -> None:
    code, out, err = run("top", "--types", *RANGE, "--csv", "--postgres-dsn", small_dsn)

    assert code == 0
    assert out.splitlines() == [
        "rank,type,events,share",
        "1,PushEvent,3,0.5",
        "2,IssuesEvent,2,0.3333333333333333",
        "3,WatchEvent,1,0.16666666666666666",
    ]
    assert "6 events counted" in " ".join(err.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repos", "--types"], "pick one view"),
        (["--contributors", "--type", "PushEvent"], "--type filters --types and --frequency"),
        (["--repos", "--per", "hour"], "--per sets the buckets of --frequency only"),
        (["--json", "--csv"], "--json and --csv"),
        (["--since", "last tuesday"], "--since 'last tuesday'"),
        (["--watch", "--json"], "--watch refreshes a table"),
    ],
)
def test_usage_errors_exit_2(small_dsn: str, args: list[str], message: str) -> None:
    code, _, err = run("top", *args, "--postgres-dsn", small_dsn)

    assert code == 2
    assert message in " ".join(err.split())


def test_watch_value_is_optional() -> None:
    assert default_watch_value(["--watch"]) == ["--watch", "5"]
    assert default_watch_value(["--watch", "--repos"]) == ["--watch", "5", "--repos"]
    assert default_watch_value(["--watch", "2"]) == ["--watch", "2"]
    assert default_watch_value(["--repos"]) == ["--repos"]


def test_aggregate_twice_changes_nothing(small_dsn: str) -> None:
    async def snapshot() -> list[list[tuple[object, ...]]]:
        conn = await asyncpg.connect(small_dsn)
        try:
            return [
                [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
                for table in (
                    "agg_repo_day",
                    "agg_actor_day",
                    "agg_actor_week",
                    "agg_contributors_day",
                    "item_resolution",
                    "aggregate_state",
                )
            ]
        finally:
            await conn.close()

    before = asyncio.run(snapshot())
    code, out, _ = run("aggregate", "--postgres-dsn", small_dsn)
    after = asyncio.run(snapshot())

    assert code == 0
    assert out.strip() == "aggregate: nothing new since the last run"
    assert after == before
