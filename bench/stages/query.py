"""Stage 7: ``ghstream top --contributors`` and ``--repos`` over a day of data.

The day is the modern hour repeated over 24 consecutive hours (fresh ids per
hour, the same population of actors and repositories), about 3.6 million
events (``--quick``: the 5,000-event slice, 120,000 events). It is loaded once
into a dedicated database through :class:`~ghstream.sinks.postgres.PostgresSink`
(one hour per batch, so the aggregates come from ghstream's own statement) and
reused by later runs while the schema migrations and the data set are the same.

Each view runs 20 times in-process, as ``ghstream top`` builds it
(:func:`ghstream.commands.top.build_report`: newest event, default window of the
newest 24 h, the view's queries), alternating the two views. Every statement
the views send is then EXPLAINed; a sequential scan of a large table is reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from bench import infra
from bench.context import Context
from bench.harness import Result, log, percentile
from ghstream.commands.top import TopOptions, build_report
from ghstream.migrate import apply_migrations, discover
from ghstream.model import Event, normalize
from ghstream.sinks.postgres import PostgresSink

HOURS = 24
RUNS = 20
BIG_TABLES = {"events", "agg_actor_hour", "agg_repo_hour", "repos"}
_DATASET_VERSION = 1


def _fingerprint(ctx: Context) -> str:
    migrations = ",".join(m.name for m in discover())
    return f"v{_DATASET_VERSION}|{ctx.modern_gz.name}|{ctx.modern_events}x{HOURS}|{migrations}"


async def _current(name: str) -> str | None:
    try:
        conn = await asyncpg.connect(infra.dsn_for(name))
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        value: str | None = await conn.fetchval("SELECT fingerprint FROM bench_dataset")
        return value
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


def _hour(events: list[Event], hour: int) -> list[Event]:
    shift = timedelta(hours=hour)
    out = []
    for event in events:
        moved = {
            name: getattr(event, name) + shift
            for name in ("item_created_at", "item_closed_at", "item_merged_at")
            if getattr(event, name) is not None
        }
        out.append(
            dataclasses.replace(
                event, id=f"{event.id}-{hour}", created_at=event.created_at + shift, **moved
            )
        )
    return out


async def ensure_day(ctx: Context) -> str:
    """The DSN of the day database, loading it unless an identical one exists."""
    name = "ghstream_bench_day_quick" if ctx.quick else "ghstream_bench_day"
    fingerprint = _fingerprint(ctx)
    if await _current(name) == fingerprint:
        log(f"  reusing database {name} ({fingerprint})")
        return infra.dsn_for(name)

    log(f"  loading {ctx.modern_events * HOURS:,} events into {name} (once; reused later)")
    await infra.drop_database(name)
    dsn = await infra.create_database(name)
    await apply_migrations(dsn)
    with ctx.modern_plain.open("rb") as lines:
        events = [normalize(orjson.loads(line)) for line in lines]
    async with PostgresSink(dsn, command_timeout_s=1800) as sink:
        for hour in range(HOURS):
            started = time.perf_counter()
            await sink.write_batch(_hour(events, hour))
            log(f"    hour {hour + 1}/{HOURS} in {time.perf_counter() - started:.1f}s")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CREATE TABLE bench_dataset (fingerprint text NOT NULL)")
        await conn.execute("INSERT INTO bench_dataset VALUES ($1)", fingerprint)
    finally:
        await conn.close()
    return dsn


class Recorder:
    """An asyncpg connection that remembers the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> Any:
        self.statements.append((query, args))
        return await self.conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.statements.append((query, args))
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.statements.append((query, args))
        return await self.conn.fetchval(query, *args)


def _options(view: str) -> TopOptions:
    return TopOptions(
        view=view,  # type: ignore[arg-type]
        since=None,
        until=None,
        repo=None,
        org=None,
        event_type=None,
        limit=10,
        include_bots=False,
        bots=(),
        per=None,
    )


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    if "Relation Name" in plan:
        found.append((plan["Node Type"], plan["Relation Name"]))
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def _explain(conn: Any, statements: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """``Seq Scan on <table>`` for each large table a statement scans without an index."""
    problems = []
    for query, args in statements:
        plan = orjson.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *args))
        for node, relation in _scans(plan[0]["Plan"]):
            if node == "Seq Scan" and relation in BIG_TABLES:
                problems.append(f"{node} on {relation}")
    return sorted(set(problems))


async def _measure(dsn: str) -> tuple[dict[str, list[float]], dict[str, list[str]], int]:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        times: dict[str, list[float]] = {"contributors": [], "repos": []}
        plans: dict[str, list[str]] = {}
        for view in times:  # warm-up, and the statements to EXPLAIN
            recorder = Recorder(conn)
            report = await build_report(recorder, _options(view))
            if not report.rows:
                raise AssertionError(f"top --{view} returned no rows")
            plans[view] = await _explain(conn, recorder.statements)
        for run in range(RUNS):
            for view in list(times) if run % 2 == 0 else list(reversed(times)):
                started = time.perf_counter()
                await build_report(conn, _options(view))
                times[view].append((time.perf_counter() - started) * 1000)
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        return times, plans, events
    finally:
        await conn.close()


def run(ctx: Context) -> list[Result]:
    log("stage 7 query: a day of data")
    dsn = asyncio.run(ensure_day(ctx))
    times, plans, events = asyncio.run(_measure(dsn))
    cli = [
        infra.run(infra.ghstream("top", "--contributors", "--json", "--postgres-dsn", dsn)).wall_s
        for _ in range(3)
    ]
    results = []
    for view, values in times.items():
        p99 = percentile(values, 0.99)
        plan = "; ".join(plans[view]) or "indexes only"
        result = Result(
            "7 query",
            f"top --{view}, {events / 1e6:.2f}M events/day, {RUNS} runs",
            "ms",
            values,
            higher_is_better=False,
            goal="p50, p99 < 200 ms",
            note=f"p50 {statistics.median(values):.0f} ms, p99 {p99:.0f} ms; plans: {plan}",
        )
        result.met = p99 < 200
        results.append(result)
    results[0].note += f"; CLI wall incl. start-up {statistics.median(cli):.2f} s"
    return results
