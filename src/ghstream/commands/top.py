"""`ghstream top`: rankings, frequencies and time to resolution, from PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
import typer
from rich.console import Console, Group, RenderableType
from rich.text import Text

from ghstream.commands._common import Command, report_error, run_async, stderr
from ghstream.config import DEFAULT_POSTGRES_DSN, PostgresOpt
from ghstream.errors import EXIT_INTERRUPTED, ConfigError, GhstreamError
from ghstream.timewindow import DEFAULT_SPAN, Granularity, parse_instant, resolve_window

if TYPE_CHECKING:
    from ghstream.queries import Report

View = Literal["contributors", "repos", "commits", "types", "frequency", "resolution"]

#: Refresh period of ``--watch`` given without a value.
DEFAULT_WATCH_S = 5.0

_VIEWS = "Views (pick one; default --contributors)"
_FILTERS = "Filters"
_OUTPUT = "Output"


@dataclass(frozen=True, slots=True)
class TopOptions:
    """Everything ``top`` needs to build one report."""

    view: View
    since: str | None
    until: str | None
    repo: str | None
    org: str | None
    event_type: str | None
    limit: int
    include_bots: bool
    bots: tuple[str, ...]
    per: Granularity | None


class NothingStored(Exception):
    """The database has no ghstream tables or no events: a message, not a failure."""


def read_bots_file(path: Path) -> tuple[str, ...]:
    """Logins listed one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--bots-file {path}: cannot read it: {exc.strerror}") from exc
    logins = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(login for login in logins if login)


async def build_report(conn: Any, options: TopOptions) -> Report[Any]:
    """Run the query behind ``options.view``; raise :class:`NothingStored` on an empty store."""
    import asyncpg

    from ghstream import queries

    try:
        newest = await queries.newest_event(conn)
    except asyncpg.UndefinedTableError:
        raise NothingStored(
            "The database has no ghstream tables yet: run `ghstream consume` "
            "(or `ghstream run`) to store events."
        ) from None
    if newest is None:
        raise NothingStored(
            "The database holds no events yet: run `ghstream ingest` and "
            "`ghstream consume` (or `ghstream run`) first."
        )

    window = resolve_window(
        options.since, options.until, now=datetime.now(UTC), newest_event=newest
    )
    common: dict[str, Any] = {"repo": options.repo, "org": options.org, "newest": newest}
    view = options.view
    if view == "contributors":
        return await queries.top_contributors(
            conn,
            window,
            limit=options.limit,
            include_bots=options.include_bots,
            bots=options.bots,
            **common,
        )
    if view in ("repos", "commits"):
        by: queries.RepoMetric = "commits" if view == "commits" else "events"
        return await queries.top_repos(conn, window, limit=options.limit, by=by, **common)
    if view == "types":
        return await queries.event_types(conn, window, event_type=options.event_type, **common)
    if view == "frequency":
        per = options.per or ("minute" if window.span <= DEFAULT_SPAN / 4 else "hour")
        return await queries.frequency(
            conn, window, per=per, event_type=options.event_type, **common
        )
    return await queries.resolution(conn, window, limit=options.limit, **common)


def empty_range_hint(report: Report[Any]) -> str | None:
    """What to tell a person when the range holds nothing to show.

    Nothing when the report carries a note: it already says why (an unknown
    --repo, resolutions not computed yet).
    """
    if report.rows or report.coverage.events or report.coverage.notes:
        return None
    coverage = report.coverage
    newest = coverage.newest_event
    hint = (
        f"No events between {coverage.start:%Y-%m-%d %H:%M} and {coverage.end:%Y-%m-%d %H:%M} UTC"
    )
    if newest is not None and newest < coverage.start:
        hint += (
            f"; the newest stored event is from {newest:%Y-%m-%d %H:%M} UTC "
            "(relative --since counts back from now; give ISO times for older data)"
        )
    return hint + "."


async def _open(dsn: str) -> Any:
    from ghstream import queries

    return await queries.connect(dsn, application_name="ghstream-top")


async def _once(dsn: str, options: TopOptions, output: str) -> None:
    from ghstream import render

    conn = await _open(dsn)
    try:
        try:
            report = await build_report(conn, options)
        except NothingStored as message:
            stderr.print(str(message))
            return
    finally:
        await conn.close()

    hint = empty_range_hint(report)
    if hint:
        stderr.print(hint)
    if output == "json":
        data = orjson.dumps(render.to_json(report), option=orjson.OPT_INDENT_2)
        sys.stdout.write(data.decode() + "\n")
    elif output == "csv":
        sys.stdout.write(render.to_csv(report))
        stderr.print(render.coverage_text(report.coverage))
    else:
        console = Console(highlight=False)
        console.print(render.render(report, width=console.width))


async def _watch(dsn: str, options: TopOptions, every_s: float) -> None:
    from rich.live import Live

    console = Console(highlight=False)
    conn = await _open(dsn)
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                live.update(await _watch_frame(conn, options, console), refresh=True)
                await asyncio.sleep(every_s)
    finally:
        await conn.close()


async def _watch_frame(conn: Any, options: TopOptions, console: Console) -> RenderableType:
    from ghstream import render

    stamp = Text(f"refreshed {datetime.now(UTC):%H:%M:%S} UTC · Ctrl-C to stop", style="dim")
    try:
        report = await build_report(conn, options)
    except NothingStored as message:
        return Text(f"{message}\n{stamp}")
    return Group(render.render(report, width=console.width), stamp)


def top(
    contributors: Annotated[
        bool,
        typer.Option("--contributors", help="Actors by contributions.", rich_help_panel=_VIEWS),
    ] = False,
    repos: Annotated[
        bool,
        typer.Option("--repos", help="Repositories by events.", rich_help_panel=_VIEWS),
    ] = False,
    commits: Annotated[
        bool,
        typer.Option(
            "--commits",
            help="Repositories by known commits, with pushes of unknown size.",
            rich_help_panel=_VIEWS,
        ),
    ] = False,
    types: Annotated[
        bool, typer.Option("--types", help="Events per type.", rich_help_panel=_VIEWS)
    ] = False,
    frequency: Annotated[
        bool,
        typer.Option(
            "--frequency",
            help="Events per minute or hour by type, as sparklines and bars.",
            rich_help_panel=_VIEWS,
        ),
    ] = False,
    resolution: Annotated[
        bool,
        typer.Option(
            "--resolution",
            help="Median and p90 time to close issues and pull requests "
            "(needs `ghstream aggregate`).",
            rich_help_panel=_VIEWS,
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Start: ISO time (2015-01-01T12:00Z) or age (30m, 1h, 7d). "
            "Default: the 24 h of data ending at the newest stored event.",
            rich_help_panel=_FILTERS,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="TIME",
            help="End (exclusive), same forms as --since. Default: now.",
            rich_help_panel=_FILTERS,
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo", metavar="OWNER/NAME", help="Only this repository.", rich_help_panel=_FILTERS
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option(
            "--org",
            metavar="OWNER",
            help="Only repositories of this owner (organization or user).",
            rich_help_panel=_FILTERS,
        ),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="Only this event type (PushEvent...); for --types and --frequency.",
            rich_help_panel=_FILTERS,
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, help="Rows to rank.", rich_help_panel=_FILTERS),
    ] = 10,
    include_bots: Annotated[
        bool,
        typer.Option(
            "--include-bots",
            help="Rank bots too (\\[bot] logins and --bots-file); `ghost` never is.",
            rich_help_panel=_FILTERS,
        ),
    ] = False,
    bots_file: Annotated[
        Path | None,
        typer.Option(
            "--bots-file",
            envvar="GHSTREAM_BOTS_FILE",
            metavar="PATH",
            help="More bot logins, one per line (# comments).",
            rich_help_panel=_FILTERS,
        ),
    ] = None,
    per: Annotated[
        str | None,
        typer.Option(
            "--per",
            metavar="minute|hour",
            help="Bucket of --frequency. Default: minute up to 6 h, else hour.",
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="JSON on stdout (fields: see README.md).", rich_help_panel=_OUTPUT
        ),
    ] = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv", help="CSV rows on stdout; coverage on stderr.", rich_help_panel=_OUTPUT
        ),
    ] = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            metavar="[SECONDS]",
            min=0.5,
            help=f"Refresh in place every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C.",
            rich_help_panel=_OUTPUT,
        ),
    ] = None,
    postgres_dsn: PostgresOpt = DEFAULT_POSTGRES_DSN,
) -> None:
    """Show who and what is most active, how often, and how fast things get closed.

    Rankings read the hourly aggregates the consumer keeps; every view ends with
    its coverage: the range read, events counted, pushes of unknown size,
    undetermined items and ingest gaps. Examples:

        ghstream top --contributors --since 1h
        ghstream top --repos --org rust-lang --since 2015-01-01 --until 2015-01-02
        ghstream top --frequency --type PushEvent --json
    """
    chosen = [
        name
        for name, flag in (
            ("contributors", contributors),
            ("repos", repos),
            ("commits", commits),
            ("types", types),
            ("frequency", frequency),
            ("resolution", resolution),
        )
        if flag
    ]
    try:
        options = _options(
            chosen, since, until, repo, org, event_type, limit, include_bots, bots_file, per
        )
        if as_json and as_csv:
            raise ConfigError("--json and --csv are alternatives: pick one.")
        if watch is not None and (as_json or as_csv):
            raise ConfigError("--watch refreshes a table in place; drop --json/--csv to use it.")
    except GhstreamError as exc:
        raise report_error(exc) from exc

    if watch is not None:
        try:
            run_async(_watch(postgres_dsn, options, watch))
        except typer.Exit as exit_:
            # Ctrl-C is how a watch ends: not a failure.
            if exit_.exit_code != EXIT_INTERRUPTED:
                raise
        return
    run_async(_once(postgres_dsn, options, "json" if as_json else "csv" if as_csv else "table"))


def _options(
    chosen: list[str],
    since: str | None,
    until: str | None,
    repo: str | None,
    org: str | None,
    event_type: str | None,
    limit: int,
    include_bots: bool,
    bots_file: Path | None,
    per: str | None,
) -> TopOptions:
    if len(chosen) > 1:
        raise ConfigError(f"pick one view, not {' and '.join('--' + v for v in chosen)}.")
    view: View = chosen[0] if chosen else "contributors"  # type: ignore[assignment]
    if event_type is not None and view not in ("types", "frequency"):
        raise ConfigError("--type filters --types and --frequency only.")
    if per not in (None, "minute", "hour"):
        raise ConfigError(f"--per is 'minute' or 'hour', not {per!r}.")
    if per is not None and view != "frequency":
        raise ConfigError("--per sets the buckets of --frequency only.")
    # Checked now, so a malformed time is a usage error without a database to ask;
    # the window itself is resolved later, against the newest stored event.
    now = datetime.now(UTC)
    for flag, text in (("--since", since), ("--until", until)):
        if text is not None:
            parse_instant(text, now=now, flag=flag)
    return TopOptions(
        view=view,
        since=since,
        until=until,
        repo=repo,
        org=org,
        event_type=event_type,
        limit=limit,
        include_bots=include_bots,
        bots=read_bots_file(bots_file) if bots_file is not None else (),
        per=per,  # type: ignore[arg-type]
    )


def default_watch_value(args: list[str]) -> list[str]:
    """``--watch`` with no number after it becomes ``--watch 5``: its value is optional."""
    out: list[str] = []
    for index, arg in enumerate(args):
        out.append(arg)
        if arg != "--watch":
            continue
        following = args[index + 1] if index + 1 < len(args) else None
        try:
            float(following or "")
        except ValueError:
            out.append(f"{DEFAULT_WATCH_S:g}")
    return out


class _TopCommand(Command):
    # Typer has no optional option values; this is the one place that knows.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        result: list[str] = super().parse_args(ctx, default_watch_value(args))
        return result


def register(app: typer.Typer) -> None:
    app.command("top", cls=_TopCommand)(top)
