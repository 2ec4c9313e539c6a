"""`ghstream consume`."""

from __future__ import annotations

import typer

from ghstream.commands._common import report_error
from ghstream.errors import NotBuiltError


def consume() -> None:
    """Read the event topic as a consumer group; store raw events in MongoDB and aggregates in PostgreSQL."""
    raise report_error(NotBuiltError("`ghstream consume` is not built yet."))


def register(app: typer.Typer) -> None:
    app.command("consume")(consume)
