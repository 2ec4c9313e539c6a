"""Stage 6: peak RSS of ``ghstream ingest`` and ``ghstream consume``, 1x and 10x input.

The 1x input is a tenth of the modern hour, the 10x input the modern hour
itself. Peak RSS is the kernel's ``VmHWM`` of the subprocess (and the summed
RSS of its process tree), see ``infra.TreeRss``: ``wait4``'s ``ru_maxrss``
would report the benchmark process's own size for every child. The 10x runs
of stage 4 are reused when it ran (one value per repetition); otherwise they
run here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import infra
from bench.context import Context
from bench.harness import Result, log


def _ingest(archive: Path, topic: str) -> float:
    result = infra.run(
        infra.ghstream(
            "ingest",
            "--archive",
            archive,
            "--topic",
            topic,
            "--bootstrap-servers",
            infra.BOOTSTRAP,
            "--json",
        )
    )
    return result.max_rss_mb


async def _pair(archive: Path) -> tuple[float, float]:
    """Peak RSS of ingesting ``archive`` into a fresh topic, then consuming it."""
    mongo_db = infra.unique("memory")
    async with infra.topic("memory") as topic, infra.database("memory") as dsn:
        ingest = await asyncio.to_thread(_ingest, archive, topic)
        consume = await asyncio.to_thread(
            infra.run,
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
            ),
        )
        infra.drop_mongo(mongo_db)
    return ingest, consume.max_rss_mb


def run(ctx: Context) -> list[Result]:
    assert ctx.small_gz is not None
    log(f"stage 6 memory: 1x = {ctx.small_events:,} events, 10x = {ctx.modern_events:,}")
    small = [asyncio.run(_pair(ctx.small_gz)) for _ in range(2 if ctx.quick else 3)]
    if not ctx.rss_mb.get("ingest"):
        big = [asyncio.run(_pair(ctx.modern_gz))]
        ctx.rss_mb["ingest"] = [b[0] for b in big]
        ctx.rss_mb["consume"] = [b[1] for b in big]
    ingest_1x = Result(
        "6 memory",
        f"ingest peak RSS, 1x ({ctx.small_events // 1000}k)",
        "MB",
        [s[0] for s in small],
        higher_is_better=False,
        goal="< 150 MB",
    )
    ingest_10x = Result(
        "6 memory",
        f"ingest peak RSS, 10x ({ctx.modern_events // 1000}k)",
        "MB",
        ctx.rss_mb["ingest"],
        higher_is_better=False,
        goal="< 150 MB, +few MB over 1x",
    )
    growth = ingest_10x.median - ingest_1x.median
    ingest_10x.note = f"+{growth:.1f} MB over 1x"
    ingest_1x.met = max(ingest_1x.values) < 150
    ingest_10x.met = max(ingest_10x.values) < 150 and growth <= 10
    consume_1x = Result(
        "6 memory",
        f"consume peak RSS, 1x ({ctx.small_events // 1000}k)",
        "MB",
        [s[1] for s in small],
        higher_is_better=False,
        goal="< 300 MB",
    )
    consume_10x = Result(
        "6 memory",
        f"consume peak RSS, 10x ({ctx.modern_events // 1000}k)",
        "MB",
        ctx.rss_mb["consume"],
        higher_is_better=False,
        goal="< 300 MB",
    )
    consume_1x.met = max(consume_1x.values) < 300
    consume_10x.met = max(consume_10x.values) < 300
    return [ingest_1x, ingest_10x, consume_1x, consume_10x]
