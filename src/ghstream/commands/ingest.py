"""`ghstream ingest`."""

from __future__ import annotations

import typer

from ghstream.commands._common import report_error
from ghstream.errors import NotBuiltError


def ingest() -> None:
    """Publish GitHub events to Kafka: poll the Events API, or backfill GH Archive hours with --archive."""
    raise report_error(NotBuiltError("`ghstream ingest` is not built yet."))


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
