"""`ghstream run`."""

from __future__ import annotations

import typer

from ghstream.commands._common import report_error
from ghstream.errors import NotBuiltError


def run() -> None:
    """Run ingest and consume as concurrent tasks of one process."""
    raise report_error(NotBuiltError("`ghstream run` is not built yet."))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
