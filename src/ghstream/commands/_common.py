"""What every command shares: running a coroutine and reporting errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from ghstream.errors import EXIT_INTERRUPTED, GhstreamError
from ghstream.logs import redact

T = TypeVar("T")

log = logging.getLogger(__name__)
stderr = Console(stderr=True, highlight=False)


class _UntypedFlags:
    """Help without a value type beside flags.

    Typer's help prints a type such as <bool> or <int> beside every option; beside a
    flag that reads as if it took a value (`--dry-run true`), so flags show none.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = param.metavar or ""
        return params


class Command(_UntypedFlags, TyperCommand):
    """A ghstream command (``app.command(cls=Command)``)."""


class Group(_UntypedFlags, TyperGroup):
    """The ``ghstream`` group."""


def report_error(exc: GhstreamError) -> typer.Exit:
    """Print ``ErrorClass: message`` on stderr and return the matching exit."""
    # Escaped: a message quoting `ghstream[dashboard]` or a `[bot]` login is text, not markup.
    stderr.print(f"[bold red]{type(exc).__name__}[/]: {escape(redact(str(exc)))}")
    return typer.Exit(code=exc.exit_code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, turning ghstream errors into exit codes."""
    try:
        return asyncio.run(coro)
    except GhstreamError as exc:
        raise report_error(exc) from exc
    except KeyboardInterrupt:
        stderr.print("Interrupted.")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
