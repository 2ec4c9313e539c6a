"""`ghstream run`: ingest and consume in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson
import typer

from ghstream import config
from ghstream.commands._common import Command, report_error, run_async, stderr
from ghstream.commands.consume import (
    BatchSizeOpt,
    FromBeginningOpt,
    GroupOpt,
    StatusOpt,
    UntilIdleOpt,
    print_summary,
)
from ghstream.commands.ingest import (
    ApiUrlOpt,
    ArchiveOpt,
    LimitOpt,
    MinIntervalOpt,
    OrgOpt,
    PartitionsOpt,
    ReplicationFactorOpt,
    RepoOpt,
    StrictOpt,
    TokenFileOpt,
    TypesOpt,
    UserOpt,
    WatchFileOpt,
    parse_types,
)
from ghstream.commands.ingest import exit_code as ingest_exit_code
from ghstream.config import (
    DEFAULT_API_URL,
    BootstrapOpt,
    JsonOpt,
    MongoDbOpt,
    MongoUrlOpt,
    PostgresOpt,
    TopicOpt,
)
from ghstream.errors import EXIT_INTERRUPTED, ConfigError, GhstreamError
from ghstream.lifecycle import handle_signals

if TYPE_CHECKING:
    from ghstream.consume import ConsumerOptions, ConsumeSummary
    from ghstream.ingest import IngestOptions, IngestSummary

log = logging.getLogger(__name__)


class TaskFailed(GhstreamError):
    """One of ``run``'s tasks raised something other than a ghstream error."""


async def _guarded(
    name: str, work: Awaitable[Any], stop: asyncio.Event, failures: list[Any]
) -> Any:
    """Run ``work``; on failure, record it and set ``stop`` so the other task ends cleanly.

    Cancelling the sibling instead (what a TaskGroup does on an exception)
    would cut its batch in hand; setting ``stop`` lets it store and commit first.
    """
    try:
        return await work
    except Exception as exc:
        log.error("%s failed: %s; stopping the other task", name, exc)
        failures.append((name, exc))
        stop.set()
        return None


async def run_both(
    ingest_options: IngestOptions, consumer_options: ConsumerOptions
) -> tuple[IngestSummary | None, ConsumeSummary | None]:
    """Run ingest and the consumer as concurrent tasks sharing one stop and signal handling.

    With ``consumer_options.until_idle_s`` the consumer counts idleness only
    once ingest has finished, so a backfill ends when it is fully stored.
    Raises the first task failure, after the other task has stopped.
    """
    from ghstream.consume import run_consumer
    from ghstream.ingest import run_ingest

    stop = asyncio.Event()
    ingest_done = asyncio.Event()
    consumer_options.idle_after = ingest_done
    failures: list[tuple[str, BaseException]] = []

    async def ingest() -> IngestSummary | None:
        try:
            result: IngestSummary | None = await _guarded(
                "ingest", run_ingest(ingest_options, stop), stop, failures
            )
            return result
        finally:
            ingest_done.set()

    with handle_signals(stop):
        async with asyncio.TaskGroup() as group:
            ingest_task = group.create_task(ingest(), name="ghstream-ingest")
            consume_task = group.create_task(
                _guarded("consume", run_consumer(consumer_options, stop), stop, failures),
                name="ghstream-consume",
            )

    if failures:
        name, exc = failures[0]
        if isinstance(exc, GhstreamError):
            raise exc
        raise TaskFailed(f"{name} failed: {type(exc).__name__}: {exc}") from exc
    return ingest_task.result(), consume_task.result()


def run(
    archive: ArchiveOpt = None,
    types: TypesOpt = None,
    limit: LimitOpt = None,
    strict: StrictOpt = False,
    repo: RepoOpt = None,
    org: OrgOpt = None,
    user: UserOpt = None,
    watch_file: WatchFileOpt = None,
    api_url: ApiUrlOpt = DEFAULT_API_URL,
    token_file: TokenFileOpt = None,
    min_interval: MinIntervalOpt = None,
    partitions: PartitionsOpt = 6,
    replication_factor: ReplicationFactorOpt = 1,
    bootstrap: BootstrapOpt = config.DEFAULT_BOOTSTRAP,
    topic: TopicOpt = config.DEFAULT_TOPIC,
    postgres_dsn: PostgresOpt = config.DEFAULT_POSTGRES_DSN,
    mongo_url: MongoUrlOpt = config.DEFAULT_MONGO_URL,
    mongo_db: MongoDbOpt = config.DEFAULT_MONGO_DB,
    group: GroupOpt = "ghstream",
    until_idle: UntilIdleOpt = None,
    from_beginning: FromBeginningOpt = False,
    batch_size: BatchSizeOpt = 5000,
    status: StatusOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Ingest and consume in one process: GitHub (or GH Archive) to Kafka to MongoDB and PostgreSQL.

    The two run as concurrent tasks with one shutdown: Ctrl-C stops both
    (each finishes its batch in hand), and if one fails the other stops and
    the command exits non-zero with the failure's message. Flags are those
    of `ghstream ingest` and `ghstream consume`.

    A backfill that ends once everything is stored:

        ghstream run --archive 2015-01-01-12 --until-idle 5
    """
    from ghstream.consume import ConsumerOptions
    from ghstream.ingest import IngestOptions

    try:
        event_types = parse_types(types)
    except ConfigError as exc:
        raise report_error(exc) from exc
    ingest_options = IngestOptions(
        bootstrap=bootstrap,
        topic=topic,
        partitions=partitions,
        replication_factor=replication_factor,
        archive=tuple(archive or ()),
        types=event_types,
        limit=limit,
        strict=strict,
        api_url=api_url,
        repos=tuple(repo or ()),
        orgs=tuple(org or ()),
        users=tuple(user or ()),
        watch_file=watch_file,
        token_file=token_file,
        min_interval_s=min_interval,
    )
    consumer_options = ConsumerOptions(
        bootstrap=bootstrap,
        topic=topic,
        group=group,
        postgres_dsn=postgres_dsn,
        mongo_url=mongo_url,
        mongo_db=mongo_db,
        batch_max_records=batch_size,
        until_idle_s=until_idle,
        from_beginning=from_beginning,
        status=status,
    )
    ingested, consumed = run_async(run_both(ingest_options, consumer_options))
    _print(ingested, consumed, as_json=as_json)
    code = ingest_exit_code(ingested, strict=strict) if ingested is not None else 0
    if code == EXIT_INTERRUPTED:
        code = 0  # a Ctrl-C that both tasks honoured is a clean stop for `run`
    raise typer.Exit(code=code)


def _print(
    ingested: IngestSummary | None, consumed: ConsumeSummary | None, *, as_json: bool
) -> None:
    if as_json:
        data = {
            "ingest": ingested.to_dict() if ingested is not None else None,
            "consume": consumed.to_dict() if consumed is not None else None,
        }
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    if ingested is not None:
        typer.echo(
            f"ingest: read={ingested.read} published={ingested.published} "
            f"dead_lettered={ingested.dead_lettered} failed={ingested.failed}"
        )
        for error in ingested.errors:
            stderr.print(f"[bold red]error[/]: {error}")
    if consumed is not None:
        print_summary(consumed, as_json=False)


def register(app: typer.Typer) -> None:
    app.command("run", cls=Command)(run)
