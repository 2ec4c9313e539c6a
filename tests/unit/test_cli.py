"""The command line as a whole: help for every command, usage errors, exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ghstream import __version__
from ghstream.cli import app
from ghstream.commands.ingest import exit_code
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
