"""`ghstream top`."""

from __future__ import annotations

import typer

from ghstream.commands._common import report_error
from ghstream.errors import NotBuiltError


def top() -> None:
    """Show contributors, repositories, event frequency and time to resolution in the terminal."""
    raise report_error(NotBuiltError("`ghstream top` is not built yet."))


def register(app: typer.Typer) -> None:
    app.command("top")(top)
