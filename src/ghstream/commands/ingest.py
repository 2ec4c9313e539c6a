"""`ghstream ingest`: publish GitHub events to Kafka, live or from GH Archive."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from ghstream.commands._common import Command, report_error, run_async, stderr
from ghstream.config import (
    DEFAULT_API_URL,
    DEFAULT_BOOTSTRAP,
    DEFAULT_TOPIC,
    BootstrapOpt,
    JsonOpt,
    TopicOpt,
    check_http_url,
)
from ghstream.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from ghstream.lifecycle import handle_signals

if TYPE_CHECKING:
    from rich.table import Table

    from ghstream.ingest import IngestOptions, IngestSummary, Progress

_BACKFILL = "Backfill (--archive)"
_LIVE = "Live (Events API)"
_TOPIC = "Topic"


# Flags shared with `ghstream run`, so both spell them the same way.
ArchiveOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--archive",
        metavar="SOURCE",
        help=(
            "Backfill instead of polling. SOURCE is a .json.gz/.json file, a directory, "
            "an http(s) URL, a GH Archive hour (2015-01-01-12) or a range of hours "
            "(2015-01-01-0..2015-01-01-23). Repeatable."
        ),
        rich_help_panel=_BACKFILL,
    ),
]

TypesOpt = Annotated[
    str | None,
    typer.Option(
        "--types",
        metavar="TYPE,...",
        help="Publish only these event types, e.g. PushEvent,PullRequestEvent.",
    ),
]

LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="Stop after publishing this many events."),
]

StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Exit 1 if any line was bad, repaired, or a gzip file was truncated.",
        rich_help_panel=_BACKFILL,
    ),
]

RepoOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--repo",
        metavar="OWNER/NAME",
        help="Poll this repository's events. Repeatable.",
        rich_help_panel=_LIVE,
    ),
]

OrgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--org",
        metavar="ORG",
        help="Poll this organisation's events. Repeatable.",
        rich_help_panel=_LIVE,
    ),
]

UserOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--user",
        metavar="LOGIN",
        help="Poll this user's events. Repeatable.",
        rich_help_panel=_LIVE,
    ),
]

WatchFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--watch-file",
        help="File with one owner/name, org:NAME or user:LOGIN per line to poll.",
        rich_help_panel=_LIVE,
    ),
]


ApiUrlOpt = Annotated[
    str,
    typer.Option(
        "--api-url",
        callback=check_http_url,
        envvar="GHSTREAM_GITHUB_API_URL",
        help="GitHub API base URL (GitHub Enterprise: https://HOST/api/v3).",
        rich_help_panel=_LIVE,
    ),
]

TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding GitHub tokens (comma or line separated); default $GITHUB_TOKEN.",
        rich_help_panel=_LIVE,
    ),
]

MinIntervalOpt = Annotated[
    float | None,
    typer.Option(
        "--min-interval",
        min=1.0,
        metavar="SECONDS",
        help=(
            "Poll each feed at this interval (at least 1 s) instead of GitHub's "
            "X-Poll-Interval; rate-limit pacing still applies."
        ),
        rich_help_panel=_LIVE,
    ),
]

PartitionsOpt = Annotated[
    int,
    typer.Option(
        "--partitions",
        min=1,
        help="Partitions of a topic created at start-up.",
        rich_help_panel=_TOPIC,
    ),
]

ReplicationFactorOpt = Annotated[
    int,
    typer.Option(
        "--replication-factor",
        min=1,
        help="Replicas of a topic created at start-up (3 on a 3-broker cluster).",
        rich_help_panel=_TOPIC,
    ),
]


def ingest(
    archive: ArchiveOpt = None,
    types: TypesOpt = None,
    limit: LimitOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print one JSON envelope per event on stdout and touch no broker.",
        ),
    ] = False,
    strict: StrictOpt = False,
    parse_workers: Annotated[
        int | None,
        typer.Option(
            "--parse-workers",
            min=0,
            help="Processes that parse archive files over 4 MiB; default CPUs minus 2 "
            "(at most 3), 0 parses in this process.",
            rich_help_panel=_BACKFILL,
            show_default=False,
        ),
    ] = None,
    repo: RepoOpt = None,
    org: OrgOpt = None,
    user: UserOpt = None,
    watch_file: WatchFileOpt = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    token_file: TokenFileOpt = None,
    min_interval: MinIntervalOpt = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Poll every feed once, then exit.", rich_help_panel=_LIVE),
    ] = False,
    json_out: JsonOpt = False,
    bootstrap: BootstrapOpt = DEFAULT_BOOTSTRAP,
    topic: TopicOpt = DEFAULT_TOPIC,
    partitions: PartitionsOpt = 6,
    replication_factor: ReplicationFactorOpt = 1,
) -> None:
    """Publish GitHub events to Kafka: poll the Events API, or backfill GH Archive with --archive.

    Each event goes to the topic (default github-events) as a versioned JSON
    envelope holding the normalized event and the raw one, keyed by repository
    so a repository's events stay in order. Lines that cannot be read go to
    TOPIC.dlq with their file, line number and reason; nothing is dropped
    silently. The summary counts only deliveries the brokers confirmed.

    Examples:

        ghstream ingest --archive 2015-01-01-0..2015-01-01-23

        ghstream ingest --archive ./hours/ --types PushEvent --dry-run | head

        ghstream ingest --repo python/cpython --org rust-lang

    Exit status: 0 on success (a live poll that found nothing new included); 1 when
    a backfill published nothing, a source failed, Kafka did not confirm a message or
    --strict saw a bad line; 2 for bad usage; 3 when Kafka is unreachable; 4 when
    GitHub refuses the token; 130 when interrupted.
    """
    from ghstream.ingest import IngestOptions

    try:
        event_types = parse_types(types)
    except ConfigError as exc:
        raise report_error(exc) from exc
    options = IngestOptions(
        bootstrap=bootstrap,
        topic=topic,
        partitions=partitions,
        replication_factor=replication_factor,
        archive=tuple(archive or ()),
        types=event_types,
        limit=limit,
        dry_run=dry_run,
        strict=strict,
        parse_workers=parse_workers,
        api_url=api_url,
        repos=tuple(repo or ()),
        orgs=tuple(org or ()),
        users=tuple(user or ()),
        watch_file=watch_file,
        token_file=token_file,
        min_interval_s=min_interval,
        once=once,
        json_status=json_out,
    )
    summary = run_async(_run(options, show_progress=stderr.is_terminal and not json_out))
    if summary.output_closed:
        # The reader of a dry run went away (`| head`): silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _print_summary(summary, as_json=json_out)
    code = exit_code(summary, strict=strict)
    reason = failure_reason(summary, strict=strict)
    if code == EXIT_FAILURE and reason is not None and not summary.errors:
        stderr.print(f"[bold red]error[/]: {escape(reason)}")
    raise typer.Exit(code=code)


def parse_types(text: str | None) -> tuple[str, ...]:
    """The --types list, without blanks or repeats; ConfigError when it names nothing."""
    if text is None:
        return ()
    types = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not types:
        raise ConfigError("--types needs at least one event type, e.g. PushEvent")
    return types


async def _run(options: IngestOptions, *, show_progress: bool) -> IngestSummary:
    from ghstream.ingest import run_ingest

    stop = asyncio.Event()
    with handle_signals(stop):
        if not show_progress or not options.archive:
            return await run_ingest(options, stop)
        with _ProgressDisplay(stderr) as display:
            return await run_ingest(options, stop, on_progress=display.update)


def exit_code(summary: IngestSummary, *, strict: bool) -> int:
    """0 on success; 130 when interrupted; 1 on errors, under --strict, or when a backfill
    published nothing."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.errors or failure_reason(summary, strict=strict) is not None:
        return EXIT_FAILURE
    return EXIT_OK


def failure_reason(summary: IngestSummary, *, strict: bool) -> str | None:
    """Why a run that raised no source error still fails (exit 1), or ``None``."""
    if summary.failed:
        return f"Kafka did not confirm {summary.failed:,} messages"
    if strict:
        truncated = sum(1 for s in summary.sources if s.truncated)
        found = [
            f"{count:,} {what}"
            for count, what in (
                (summary.bad, "bad lines"),
                (summary.recovered, "repaired lines"),
                (truncated, "files cut short or with unreadable data at the end"),
            )
            if count
        ]
        if found:
            return f"--strict: {', '.join(found)}"
    if summary.output_closed or summary.mode == "live" or summary.published > 0:
        # A quiet live poll is success; a backfill that published nothing is not.
        return None
    if summary.limit_reached:
        return "--limit stopped the run before any event was published"
    if summary.read and summary.filtered == summary.read:
        return "--types matched none of the events read (type names are case-sensitive)"
    if not summary.read:
        return "the sources held no events"
    return "no event was published"


class _ProgressDisplay:
    """Events read, events/s and bad lines on stderr, refreshed after each batch."""

    def __init__(self, console: Console) -> None:
        from rich.progress import Progress as RichProgress
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("[bold]{task.fields[read]:,}[/] events"),
            TextColumn("{task.fields[rate]:,.0f}/s"),
            TextColumn("[red]{task.fields[bad]}[/] bad"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=None, read=0, rate=0.0, bad=0)
        self._started = time.monotonic()

    def __enter__(self) -> _ProgressDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, snapshot: Progress) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        description = (
            f"[{snapshot.source_index + 1}/{snapshot.source_count}] {escape(snapshot.source)}"
        )
        self._progress.update(
            self._task,
            description=description,
            read=snapshot.read,
            rate=snapshot.read / elapsed,
            bad=snapshot.bad,
        )


def _print_summary(summary: IngestSummary, *, as_json: bool) -> None:
    # In a dry run stdout carries the envelopes, so the summary goes to stderr.
    to_stderr = summary.dry_run
    if as_json:
        data = orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2, default=str)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(data.decode() + "\n")
        stream.flush()
        return
    console = stderr if to_stderr else Console(highlight=False)
    if summary.mode == "archive":
        table = _sources_table(summary)
        if not console.is_terminal:
            # A log file has no width: keep whole paths and URLs rather than cutting them.
            wide = console.options.update_width(250)
            console.width = max(console.width, console.measure(table, options=wide).maximum)
        console.print(table)
    console.print(_totals_line(summary))
    for error in summary.errors:
        stderr.print(f"[bold red]error[/]: {escape(error)}")


def _sources_table(summary: IngestSummary) -> Table:
    from rich.table import Table

    table = Table(title="ghstream ingest", title_justify="left", show_edge=False)
    for column in ("source", "lines", "events", "recovered", "bad", "filtered", "published"):
        table.add_column(column, justify="left" if column == "source" else "right")
    table.add_column("notes")
    for item in summary.sources:
        notes = list(item.notes)
        if item.error:
            notes.append(f"[red]{escape(item.error)}[/]")
        table.add_row(
            escape(item.source),
            f"{item.lines:,}",
            f"{item.events:,}",
            f"{item.recovered:,}",
            f"{item.bad:,}",
            f"{item.filtered:,}",
            f"{item.published:,}",
            "; ".join(notes),
        )
    return table


def _totals_line(summary: IngestSummary) -> str:
    verb = "printed" if summary.dry_run else "published"
    parts = [
        f"read {summary.read:,}",
        f"{verb} {summary.published:,}",
        f"recovered {summary.recovered:,}",
        f"dead-lettered {summary.dead_lettered:,}",
        f"skipped by filter {summary.filtered:,}",
    ]
    if summary.trimmed:
        parts.append(f"trimmed {summary.trimmed:,}")
    if summary.failed:
        parts.append(f"[red]failed {summary.failed:,}[/]")
    tail = f" in {summary.elapsed_s:.1f}s ({summary.events_per_s:,.0f} events/s)"
    flags = [
        flag
        for flag, on in (
            ("limit reached", summary.limit_reached),
            ("[yellow]interrupted[/]", summary.interrupted),
        )
        if on
    ]
    return ", ".join(parts) + tail + (f" ({', '.join(flags)})" if flags else "")


def register(app: typer.Typer) -> None:
    app.command("ingest", cls=Command)(ingest)
