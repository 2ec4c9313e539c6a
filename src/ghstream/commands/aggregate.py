"""`ghstream aggregate`."""

from __future__ import annotations

import typer

from ghstream.commands._common import report_error
from ghstream.errors import NotBuiltError


def aggregate() -> None:
    """Run the periodic analytics: contributor trends, time to resolution, repository activity."""
    raise report_error(NotBuiltError("`ghstream aggregate` is not built yet."))


def register(app: typer.Typer) -> None:
    app.command("aggregate")(aggregate)
