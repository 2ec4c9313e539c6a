"""Stage 5: latency at a steady 300 events/s, from the producer's send to PostgreSQL.

A ``ghstream consume`` process runs against a fresh topic and database. This
process publishes modern-hour events with ghstream's
:class:`~ghstream.kafka.EventPublisher` (the live ingester's producer, 50 ms
linger) at a steady 300 events/s, and polls PostgreSQL every 10 ms for the ids
sent and not seen yet. An event's row in ``events`` is written in the same
statement, and so the same transaction, as its aggregate rows, so seeing the
row means the aggregates count it. The run is cut into windows, one per
repetition; each window reports p50 and p99.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from itertools import islice

import asyncpg
import orjson

from bench import infra
from bench.context import Context
from bench.harness import Result, log, percentile
from ghstream.kafka import EventPublisher
from ghstream.model import Event, normalize

RATE = 300
POLL_S = 0.01


def _events(ctx: Context, count: int) -> list[tuple[Event, bytes]]:
    with ctx.modern_plain.open("rb") as lines:
        return [
            (normalize(orjson.loads(line)), line.rstrip(b"\n")) for line in islice(lines, count)
        ]


async def _poll(
    dsn: str, sent: dict[str, float], seen: dict[str, float], stop: asyncio.Event
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set() or len(seen) < len(sent):
            pending = [event_id for event_id in sent if event_id not in seen]
            if pending:
                rows = await conn.fetch("SELECT id FROM events WHERE id = ANY($1::text[])", pending)
                now = time.perf_counter()
                for row in rows:
                    seen[row["id"]] = now
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


async def _wait_ready(dsn: str, publisher: EventPublisher, probe: tuple[Event, bytes]) -> None:
    """Publish one event and wait for it in PostgreSQL: the consumer has joined and migrated."""
    await publisher.publish(*probe)
    await publisher.flush()
    async with asyncio.timeout(120):
        while True:
            try:
                conn = await asyncpg.connect(dsn)
                try:
                    if await conn.fetchval("SELECT 1 FROM events WHERE id = $1", probe[0].id):
                        return
                finally:
                    await conn.close()
            except asyncpg.UndefinedTableError:
                pass
            await asyncio.sleep(0.1)


async def measure(ctx: Context, seconds: float) -> list[tuple[float, float]]:
    """``(send time, latency)`` of every event of a ``seconds``-long run at :data:`RATE`/s."""
    events = _events(ctx, int(seconds * RATE) + 1)
    probe, events = events[0], events[1:]
    mongo_db = infra.unique("latency")
    async with infra.topic("latency") as topic, infra.database("latency") as dsn:
        consumer = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [
                str(part)
                for part in infra.ghstream(
                    "consume",
                    "--topic",
                    topic,
                    "--group",
                    topic,
                    "--postgres-dsn",
                    dsn,
                    "--mongo-url",
                    infra.MONGO_URL,
                    "--mongo-db",
                    mongo_db,
                    "--bootstrap-servers",
                    infra.BOOTSTRAP,
                    "--no-status",
                )
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1"},
        )
        try:
            async with EventPublisher(infra.BOOTSTRAP, topic, client_id="bench-latency") as pub:
                await _wait_ready(dsn, pub, probe)
                sent: dict[str, float] = {}
                seen: dict[str, float] = {}
                stop = asyncio.Event()
                poller = asyncio.create_task(_poll(dsn, sent, seen, stop))
                started = time.perf_counter()
                for index, (event, raw) in enumerate(events):
                    delay = started + index / RATE - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent[event.id] = time.perf_counter()
                    await pub.publish(event, raw)
                stop.set()
                await asyncio.wait_for(poller, timeout=60)
        finally:
            consumer.send_signal(signal.SIGINT)
            await asyncio.to_thread(consumer.wait, 60)
            infra.drop_mongo(mongo_db)
    return sorted((sent[i] - started, seen[i] - sent[i]) for i in sent)


def run(ctx: Context) -> list[Result]:
    windows = ctx.reps
    window_s = 3.0 if ctx.quick else 10.0
    log(f"stage 5 latency: {windows} windows of {window_s:.0f}s at {RATE} events/s")
    samples = asyncio.run(measure(ctx, windows * window_s + 1))
    samples = [s for s in samples if s[0] >= 1.0]  # the first second warms the pipeline up
    p50s, p99s = [], []
    for window in range(windows):
        low = 1.0 + window * window_s
        latencies = [lat for at, lat in samples if low <= at < low + window_s]
        p50s.append(percentile(latencies, 0.5) * 1000)
        p99s.append(percentile(latencies, 0.99) * 1000)
    overall = [lat for _, lat in samples]
    p99 = percentile(overall, 0.99) * 1000
    note = f"{len(overall):,} events; all: p50 {percentile(overall, 0.5) * 1000:.0f} ms"
    p50_row = Result(
        "5 latency",
        "send -> PG aggregates, p50 per window",
        "ms",
        p50s,
        higher_is_better=False,
        note=note,
    )
    p99_row = Result(
        "5 latency",
        "send -> PG aggregates, p99 per window",
        "ms",
        p99s,
        higher_is_better=False,
        goal="p99 < 1000 ms",
        note=f"all: p99 {p99:.0f} ms",
    )
    p99_row.met = p99 < 1000
    return [p50_row, p99_row]
