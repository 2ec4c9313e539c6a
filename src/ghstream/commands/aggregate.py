"""`ghstream aggregate`: the periodic batch analytics."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from ghstream.commands._common import Command, report_error, run_async, stderr
from ghstream.config import DEFAULT_POSTGRES_DSN, JsonOpt, PostgresOpt
from ghstream.errors import GhstreamError, StoreError
from ghstream.lifecycle import handle_signals
from ghstream.timewindow import parse_duration

if TYPE_CHECKING:
    from ghstream.analytics import AggregateResult

log = logging.getLogger(__name__)


def summary_line(result: AggregateResult) -> str:
    """One ``key=value`` line of what a run did."""
    if result.new_events == 0 and not result.full:
        return "aggregate: nothing new since the last run"
    watermark = result.watermark.isoformat() if result.watermark else "none"
    return (
        f"aggregate: full={str(result.full).lower()} new_events={result.new_events} "
        f"repo_hours={result.repo_hours} repo_days={result.repo_days} "
        f"actor_days={result.actor_days} actor_weeks={result.actor_weeks} "
        f"contributor_days={result.contributor_days} items={result.items} "
        f"watermark={watermark} elapsed_s={result.elapsed_s:.2f}"
    )


def _to_json(result: AggregateResult) -> str:
    data: dict[str, Any] = {
        "full": result.full,
        "new_events": result.new_events,
        "repo_hours": result.repo_hours,
        "repo_days": result.repo_days,
        "actor_days": result.actor_days,
        "actor_weeks": result.actor_weeks,
        "contributor_days": result.contributor_days,
        "items": result.items,
        "watermark": result.watermark.isoformat() if result.watermark else None,
        "elapsed_s": round(result.elapsed_s, 3),
    }
    return orjson.dumps({"aggregate": data}).decode()


async def _run_once(conn: Any, *, full: bool) -> AggregateResult:
    import asyncpg

    from ghstream.analytics import run_aggregate

    status = stderr.status("aggregating") if stderr.is_terminal else nullcontext()
    with status as shown:

        def progress(step: str) -> None:
            if shown is not None:
                shown.update(f"aggregate: {step}")

        try:
            return await run_aggregate(conn, full=full, progress=progress)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"aggregate failed: {type(exc).__name__}: {exc}") from exc


async def _aggregate(dsn: str, *, full: bool, every_s: float | None, as_json: bool) -> None:
    from ghstream.migrate import apply_migrations
    from ghstream.queries import connect

    conn = await connect(dsn, application_name="ghstream-aggregate")
    try:
        await apply_migrations(conn)
        if every_s is None:
            result = await _run_once(conn, full=full)
            typer.echo(_to_json(result) if as_json else summary_line(result))
            return
        await _repeat(conn, dsn, full=full, every_s=every_s, as_json=as_json)
    finally:
        await conn.close()


async def _repeat(conn: Any, dsn: str, *, full: bool, every_s: float, as_json: bool) -> None:
    """Run every ``every_s`` seconds (work time included) until a signal."""
    from ghstream.queries import connect

    stop = asyncio.Event()
    with handle_signals(stop):
        while not stop.is_set():
            started = time.monotonic()
            try:
                if conn.is_closed():
                    conn = await connect(dsn, application_name="ghstream-aggregate")
                result = await _run_once(conn, full=full)
                typer.echo(_to_json(result) if as_json else summary_line(result))
            except GhstreamError as exc:
                # One failed run (PostgreSQL restarting...) is retried on the next tick.
                log.warning("%s; retrying in %.0f s", exc, every_s)
            full = False  # --full rebuilds once, then the runs are incremental
            delay = max(every_s - (time.monotonic() - started), 0.0)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


def aggregate(
    full: Annotated[
        bool,
        typer.Option("--full", help="Empty the analytics tables and rebuild them from all events."),
    ] = False,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="DURATION",
            help="Run again every DURATION (30s, 5m, 1h) until Ctrl-C.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    postgres_dsn: PostgresOpt = DEFAULT_POSTGRES_DSN,
) -> None:
    """Run the batch analytics: contributor trends, time to resolution, repository activity.

    Each run aggregates only the events stored since the previous one, and
    recomputes the hours, days, weeks and issues they touch, so late events are
    counted where they belong. Running it twice changes nothing. Results feed
    `ghstream top --resolution` and the per-day tables listed in README.md.

        ghstream aggregate
        ghstream aggregate --every 5m
        ghstream aggregate --full
    """
    try:
        every_s = parse_duration(every, flag="--every").total_seconds() if every else None
    except GhstreamError as exc:
        raise report_error(exc) from exc
    run_async(_aggregate(postgres_dsn, full=full, every_s=every_s, as_json=as_json))


def register(app: typer.Typer) -> None:
    app.command("aggregate", cls=Command)(aggregate)
