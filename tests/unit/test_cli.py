"""The command line as a whole: help for every command, usage errors, exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ghstream import __version__
from ghstream.cli import app
from ghstream.commands.ingest import exit_code, failure_reason
from ghstream.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ghstream.ingest import IngestSummary

COMMANDS = ["ingest", "consume", "run", "aggregate", "top", "dashboard"]


def test_every_command_is_listed_with_help() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    _, _, rest = result.stdout.partition(f"ghstream {command}")
    # After the usage line comes the docstring's summary; an undocumented command has none.
    summary = next(line.strip() for line in rest.splitlines()[1:] if line.strip())
    assert not summary.startswith("╭"), result.stdout
    assert len(summary) > 20


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.stdout.strip() == f"ghstream {__version__}"


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_empty_types_list_is_a_usage_error_not_a_traceback(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--archive", "x.json", "--types", " , "])
    assert result.exit_code == EXIT_USAGE
    assert "ConfigError: --types needs at least one event type" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_quiet_live_poll_succeeds_and_an_empty_backfill_fails() -> None:
    """A --once poll that found nothing new is success for cron; a backfill that published
    nothing (say a --types typo) is not."""
    assert exit_code(IngestSummary(mode="live"), strict=False) == EXIT_OK
    assert exit_code(IngestSummary(mode="archive", read=5, filtered=5), strict=False) == (
        EXIT_FAILURE
    )
    assert exit_code(IngestSummary(mode="archive", read=5, published=5), strict=False) == EXIT_OK


@pytest.mark.parametrize("command", ["top", "consume", "aggregate"])
@pytest.mark.parametrize(
    "dsn", ["notadsn", "host=127.0.0.1 user=x password=kvsecret", "postgresql://x:kvsecret@h:np/d"]
)
def test_a_malformed_postgres_dsn_is_a_usage_error_that_hides_the_password(
    command: str, dsn: str
) -> None:
    result = CliRunner().invoke(app, [command, "--postgres-dsn", dsn], env={"COLUMNS": "200"})

    assert result.exit_code == EXIT_USAGE
    assert "not a PostgreSQL URL" in result.stderr
    assert "kvsecret" not in result.stderr + result.stdout


def test_an_archive_url_with_credentials_is_never_printed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The summary table, the error line and the --json summary show the URL redacted."""
    from ghstream import archive

    monkeypatch.setattr(archive, "HTTP_RETRY_DELAY_S", 0)
    url = "http://user:hunter2pw@127.0.0.1:1/x.json.gz?sig=s1gn4ture"
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(app, ["ingest", "--dry-run", *extra, "--archive", url])

        assert result.exit_code == EXIT_FAILURE
        output = result.stdout + result.stderr
        assert "127.0.0.1:1/x.json.gz" in output
        assert "hunter2pw" not in output
        assert "s1gn4ture" not in output


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        (IngestSummary(mode="archive"), "the sources held no events"),
        (IngestSummary(mode="archive", read=5, filtered=5), "--types matched none"),
        (IngestSummary(mode="archive", read=5, published=5, bad=1), "--strict: 1 bad lines"),
    ],
)
def test_a_failed_backfill_says_why(summary: IngestSummary, reason: str) -> None:
    assert exit_code(summary, strict=True) == EXIT_FAILURE
    assert (failure_reason(summary, strict=True) or "").startswith(reason)


def test_an_empty_archive_file_exits_1_with_a_reason(tmp_path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")

    result = CliRunner().invoke(app, ["ingest", "--dry-run", "--archive", str(empty)])

    assert result.exit_code == EXIT_FAILURE
    assert "error: the sources held no events" in result.stderr


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_shows_no_value_type_beside_flags(command: list[str]) -> None:
    """Typer prints `<bool>` beside flags, which reads as `--dry-run true`."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    assert "list[str]" not in result.stdout


def test_live_polling_flags_beside_archive_are_a_usage_error(tmp_path) -> None:
    archive = tmp_path / "one.json"
    archive.write_bytes(b"")

    result = CliRunner().invoke(
        app, ["ingest", "--dry-run", "--archive", str(archive), "--repo", "a/b", "--once"]
    )

    assert result.exit_code == EXIT_USAGE
    assert "--repo, --once are for live polling" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--archive", "x.json", "--bootstrap-servers", "127.0.0.1:abc"], "host:port"),
        (["consume", "--bootstrap-servers", "not a host:::"], "host:port"),
        (["consume", "--mongo-db", "bad.db/name"], "not a MongoDB database name"),
        (["consume", "--mongo-url", "http://x"], "not a MongoDB connection string"),
        (["ingest", "--once", "--dry-run", "--api-url", "notaurl"], "not an http(s) URL"),
        (["top", "--since", "99999999d"], "reaches before the year 1"),
        (["aggregate", "--every", "99999999999d"], "longer than Python's dates reach"),
    ],
)
def test_malformed_settings_are_usage_errors_without_a_traceback(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})

    assert result.exit_code == EXIT_USAGE, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
