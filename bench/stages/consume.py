"""Stage 3: ``ghstream consume`` into PostgreSQL and MongoDB, against a naive consumer.

* Overall: ``ghstream consume --until-idle 0`` of a topic holding the modern hour
  (written once by ``ghstream ingest``), into a fresh database and a fresh
  MongoDB database, against :mod:`bench.peers.naive_consumer` (kafka-python, one
  INSERT per event, autocommit). Both are watched from PostgreSQL: the rate runs
  from the first stored rows to the last, so start-up (group join, migrations)
  counts for neither.
* Each store alone, in-process, on the same events: ghstream's
  :class:`~ghstream.sinks.postgres.PostgresSink` (events and aggregates) against
  a bare ``COPY`` into ``events`` (the ceiling of loading the fact table), and
  :class:`~ghstream.sinks.mongo.MongoSink` against raw pymongo ``insert_many`` of
  the same documents: the ceiling of the MongoDB stand-in itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pymongo import MongoClient

from bench import infra
from bench.context import Context
from bench.harness import Result, alternate, log
from ghstream.migrate import apply_migrations
from ghstream.model import Event, normalize
from ghstream.sinks.mongo import _INDEXES as MONGO_INDEXES
from ghstream.sinks.mongo import MongoSink, event_document
from ghstream.sinks.postgres import EVENT_COLUMNS, PostgresSink, event_row

BATCH = 2000
PEERS = infra.ROOT / "bench" / "peers"


def naive_limit(ctx: Context) -> int:
    """Events the naive consumer stores: a few hundred per second, steady after the first."""
    return 500 if ctx.quick else 3_000


def store_events(ctx: Context) -> int:
    """Events per store-alone repetition: the MongoDB stand-in takes about 1 ms per event."""
    return min(ctx.modern_events, 5_000 if ctx.quick else 15_000)


def _input(ctx: Context) -> tuple[Path, int]:
    """The archive consumed overall: the modern hour's tenth (quick: the 5k slice).

    The MongoDB stand-in stores about 1,000-2,000 events/s, so a whole modern hour
    would take minutes per repetition; the rate is steady well before 15,000 events.
    """
    if ctx.quick or ctx.small_gz is None:
        return ctx.modern_gz, ctx.modern_events
    return ctx.small_gz, ctx.small_events


# -- overall ---------------------------------------------------------------------------------


async def _consume(ctx: Context, topic: str, naive: bool) -> float:
    events = _input(ctx)[1]
    mongo_db = infra.unique("consume")
    async with infra.database("consume") as dsn:
        group = infra.unique("group")
        if naive:
            await apply_migrations(dsn)
            expected = naive_limit(ctx)
            cmd: list[Any] = [
                infra.BIN / "python",
                PEERS / "naive_consumer.py",
                topic,
                group,
                infra.BOOTSTRAP,
                dsn,
                infra.MONGO_URL,
                mongo_db,
                str(expected),
            ]
        else:
            expected = events
            cmd = infra.ghstream(
                "consume",
                "--topic",
                topic,
                "--group",
                group,
                "--postgres-dsn",
                dsn,
                "--mongo-url",
                infra.MONGO_URL,
                "--mongo-db",
                mongo_db,
                "--bootstrap-servers",
                infra.BOOTSTRAP,
                "--until-idle",
                "0",
                "--no-status",
                "--json",
            )
        try:
            timing = await infra.watch_store(cmd, dsn, expected)
        finally:
            infra.drop_mongo(mongo_db)
        if not naive:
            summary = orjson.loads(timing.stdout)["consume"]
            if summary["stored"] != expected or summary["mongo_inserted"] != expected:
                raise AssertionError(f"ghstream consume stored {summary}, expected {expected}")
        return timing.rate


# -- each store alone ------------------------------------------------------------------------


def _load(ctx: Context) -> list[tuple[Event, dict[str, Any]]]:
    with ctx.modern_plain.open("rb") as lines:
        raws = [orjson.loads(line) for line in islice(lines, store_events(ctx))]
    return [(normalize(raw), raw) for raw in raws]


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


async def _postgres_sink(events: list[Event]) -> float:
    async with infra.database("pgsink") as dsn:
        await apply_migrations(dsn)
        async with PostgresSink(dsn) as sink:
            started = time.perf_counter()
            for chunk in _chunks(events):
                result = await sink.write_batch(chunk)
                assert result.inserted == len(chunk), result
            return len(events) / (time.perf_counter() - started)


async def _postgres_copy(events: list[Event]) -> float:
    rows = [event_row(event)[: len(EVENT_COLUMNS)] for event in events]
    async with infra.database("pgcopy") as dsn:
        await apply_migrations(dsn)
        conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        try:
            started = time.perf_counter()
            for chunk in _chunks(rows):
                await conn.copy_records_to_table("events", records=chunk, columns=EVENT_COLUMNS)
            return len(rows) / (time.perf_counter() - started)
        finally:
            await conn.close()


async def _mongo_sink(pairs: list[tuple[Event, dict[str, Any]]]) -> float:
    name = infra.unique("mongosink")
    try:
        async with MongoSink(infra.MONGO_URL, name) as sink:
            started = time.perf_counter()
            for chunk in _chunks(pairs):
                result = await sink.write_batch(chunk)
                assert result.inserted == len(chunk), result
            return len(pairs) / (time.perf_counter() - started)
    finally:
        infra.drop_mongo(name)


def _pymongo(docs: list[dict[str, Any]]) -> float:
    name = infra.unique("pymongo")
    client: MongoClient[dict[str, Any]] = MongoClient(infra.MONGO_URL, tz_aware=True)
    try:
        collection = client[name]["events"]
        for index_name, keys in MONGO_INDEXES:  # the same indexes MongoSink maintains
            collection.create_index(keys, name=index_name)
        started = time.perf_counter()
        for chunk in _chunks(docs):
            collection.insert_many(list(chunk), ordered=False)
        return len(docs) / (time.perf_counter() - started)
    finally:
        client.drop_database(name)
        client.close()


def run(ctx: Context) -> list[Result]:
    archive, events = _input(ctx)
    topic = infra.filled_topic(archive, events)
    label = f"modern {events // 1000}k"
    log(f"stage 3 consume: {label} from {topic}")
    overall = alternate(
        [
            ("ghstream", lambda: asyncio.run(_consume(ctx, topic, naive=False))),
            ("naive", lambda: asyncio.run(_consume(ctx, topic, naive=True))),
        ],
        reps=ctx.reps,
        warmup=ctx.warmup,
    )
    naive = Result(
        "3 consume",
        "naive consumer: kafka-python, INSERT per event",
        "events/s",
        overall["naive"],
        note=f"first {naive_limit(ctx):,} events, PG+Mongo, no aggregates",
    )
    mine = Result(
        "3 consume",
        f"ghstream consume, PG+aggregates+Mongo ({label})",
        "events/s",
        overall["ghstream"],
        peer=naive,
        goal=">= 10x naive",
    )
    mine.met = (mine.ratio() or 0) >= 10

    log(f"stage 3 consume, each store alone: {store_events(ctx):,} events in batches of {BATCH}")
    pairs = _load(ctx)
    events = [event for event, _ in pairs]
    docs = [event_document(event, raw) for event, raw in pairs]
    alone = alternate(
        [
            ("pg sink", lambda: asyncio.run(_postgres_sink(events))),
            ("pg copy", lambda: asyncio.run(_postgres_copy(events))),
            ("mongo sink", lambda: asyncio.run(_mongo_sink(pairs))),
            ("pymongo", lambda: _pymongo(docs)),
        ],
        reps=ctx.reps,
        warmup=ctx.warmup,
    )
    n = f"{store_events(ctx) // 1000}k events"
    copy = Result(
        "3 consume",
        "PostgreSQL COPY into events only (ceiling)",
        "events/s",
        alone["pg copy"],
        note=n,
    )
    pg = Result(
        "3 consume",
        "ghstream PostgresSink: events + aggregates",
        "events/s",
        alone["pg sink"],
        peer=copy,
        goal=">= 10,000 events/s",
        note=n,
    )
    pg.met = pg.median >= 10_000
    raw = Result(
        "3 consume",
        "pymongo insert_many, same indexes (SecantusDB ceiling)",
        "events/s",
        alone["pymongo"],
        note=n,
    )
    mongo = Result(
        "3 consume", "ghstream MongoSink", "events/s", alone["mongo sink"], peer=raw, note=n
    )
    return [mine, naive, pg, copy, mongo, raw]
