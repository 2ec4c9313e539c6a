"""The ``ghstream`` command line: parse flags, set up logging, run one command.

Each command's implementation lives in ``ghstream.commands``; this module only
assembles the application and turns a :class:`~ghstream.errors.GhstreamError`
into a message on stderr and an exit code (see ``commands._common``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ghstream import __version__
from ghstream.commands import aggregate, consume, dashboard, ingest, run, top
from ghstream.commands._common import Group
from ghstream.logs import setup_logging

app = typer.Typer(
    name="ghstream",
    help=(
        "Stream GitHub's public activity through Kafka into MongoDB and PostgreSQL, "
        "and analyse it from the terminal."
    ),
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ghstream {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="More log output (-v); -vv for libraries too.",
        ),
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    setup_logging(verbose=verbose, quiet=quiet)


for module in (ingest, consume, run, aggregate, top, dashboard):
    module.register(app)


def main() -> None:
    """Entry point of the ``ghstream`` console script."""
    app()
