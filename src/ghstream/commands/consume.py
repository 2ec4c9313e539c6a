"""`ghstream consume`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from ghstream import config
from ghstream.commands._common import Command, run_async
from ghstream.config import BootstrapOpt, JsonOpt, MongoDbOpt, MongoUrlOpt, PostgresOpt, TopicOpt
from ghstream.lifecycle import handle_signals

if TYPE_CHECKING:
    from ghstream.consume import ConsumerOptions, ConsumeSummary

_PANEL = "Consumer"

# Shared with `ghstream run`, so both spell these flags the same way.
GroupOpt = Annotated[
    str,
    typer.Option(
        "--group",
        envvar="GHSTREAM_GROUP",
        help="Kafka consumer group. Processes in one group share the topic's partitions.",
        rich_help_panel=_PANEL,
    ),
]
UntilIdleOpt = Annotated[
    float | None,
    typer.Option(
        "--until-idle",
        metavar="SECONDS",
        min=0,
        help="Exit once every assigned partition has been drained for SECONDS (batch use).",
        rich_help_panel=_PANEL,
    ),
]
FromBeginningOpt = Annotated[
    bool,
    typer.Option(
        "--from-beginning",
        help="Re-read the topic from its earliest offsets (a replay; results stay the same).",
        rich_help_panel=_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        max=50_000,
        help="Most messages stored and committed per batch.",
        rich_help_panel=_PANEL,
    ),
]
StatusOpt = Annotated[
    bool,
    typer.Option(
        "--status/--no-status",
        help="Show a status line (events/s, lag per partition...) on a terminal, "
        "or log it every 10 s.",
        rich_help_panel=_PANEL,
    ),
]


def print_summary(summary: ConsumeSummary, *, as_json: bool) -> None:
    """The consumer's counters on stdout, as JSON or one ``key=value`` line."""
    data = summary.to_dict()
    if as_json:
        typer.echo(orjson.dumps({"consume": data}, option=orjson.OPT_INDENT_2).decode())
        return
    keys = ("consumed", "stored", "duplicates", "dead_lettered", "gaps", "events_per_s")
    typer.echo("consume: " + " ".join(f"{key}={data[key]}" for key in keys))


async def _consume(options: ConsumerOptions) -> ConsumeSummary:
    from ghstream.consume import run_consumer

    stop = asyncio.Event()
    with handle_signals(stop):
        return await run_consumer(options, stop)


def consume(
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
    """Store the event topic in MongoDB (raw events) and PostgreSQL (facts and aggregates).

    Reads the topic as a consumer group and commits offsets only for events
    that both stores hold, so a crash, a restart or a replay never loses an
    event or counts one twice. Messages that are not ghstream envelopes go to
    TOPIC.dlq with the reason. When a store is unreachable the consumer waits
    and retries; nothing is committed meanwhile.

    Runs until Ctrl-C (the batch in hand is stored and committed first), or
    with --until-idle until the topic has been drained for that long:

        ghstream consume --until-idle 5 --json
    """
    from ghstream.consume import ConsumerOptions

    options = ConsumerOptions(
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
    summary = run_async(_consume(options))
    print_summary(summary, as_json=as_json)


def register(app: typer.Typer) -> None:
    app.command("consume", cls=Command)(consume)
