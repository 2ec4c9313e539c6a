"""Stage 4: the modern hour from its archive file to aggregates ``ghstream top`` can query.

One repetition: ``ghstream ingest --archive`` into a topic it creates, then
``ghstream consume --until-idle 0`` into a fresh PostgreSQL database and MongoDB
database, then ``ghstream top --repos --json``, all as subprocesses on this
machine with every service on it. The clock runs from the first spawn to the
end of ``top``; the outputs are checked (every event published, stored in both
stores, and ranked).
"""

from __future__ import annotations

import asyncio
import time

import orjson

from bench import infra
from bench.context import Context
from bench.harness import Result, alternate, log


async def _once(ctx: Context) -> float:
    topic = infra.unique("e2e").replace("_", "-")
    mongo_db = infra.unique("e2e")
    async with infra.database("e2e") as dsn:
        try:
            started = time.perf_counter()
            ingest = infra.run(
                infra.ghstream(
                    "ingest",
                    "--archive",
                    ctx.modern_gz,
                    "--topic",
                    topic,
                    "--bootstrap-servers",
                    infra.BOOTSTRAP,
                    "--json",
                )
            )
            consume = infra.run(
                infra.ghstream(
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
                    "--until-idle",
                    "0",
                    "--no-status",
                    "--json",
                )
            )
            top = infra.run(infra.ghstream("top", "--repos", "--json", "--postgres-dsn", dsn))
            elapsed = time.perf_counter() - started
            log(
                f"    ingest {ingest.wall_s:.1f}s, consume {consume.wall_s:.1f}s, "
                f"top {top.wall_s:.1f}s"
            )
        finally:
            await infra.delete_topics([topic])
            infra.drop_mongo(mongo_db)
    ctx.rss_mb.setdefault("ingest", []).append(ingest.max_rss_mb)
    ctx.rss_mb.setdefault("consume", []).append(consume.max_rss_mb)
    published = orjson.loads(ingest.stdout)["published"]
    stored = orjson.loads(consume.stdout)["consume"]
    if published != ctx.modern_events or stored["stored"] != ctx.modern_events:
        raise AssertionError(f"published {published}, stored {stored}")
    if not orjson.loads(top.stdout).get("rows"):
        raise AssertionError(f"top --repos returned no rows: {top.stdout[:500]}")
    return elapsed


def run(ctx: Context) -> list[Result]:
    label = f"modern {ctx.modern_events // 1000}k"
    log(f"stage 4 end to end: {label}")
    # Three repetitions at most: each takes minutes with the MongoDB stand-in in the loop.
    reps = min(ctx.reps, 3)
    values = alternate([("e2e", lambda: asyncio.run(_once(ctx)))], reps=reps, warmup=0)
    result = Result(
        "4 end to end",
        f"archive -> Kafka -> PG+Mongo -> top ({label})",
        "s",
        values["e2e"],
        higher_is_better=False,
        goal="< 60 s",
    )
    result.met = result.median < 60
    return [result]
