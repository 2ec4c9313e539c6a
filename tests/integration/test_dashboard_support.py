"""What the dashboard and Grafana tests share: storing a real GH Archive hour in a test database.

Not a test module of its own (it holds no test); its name lets the dashboard
and Grafana tests import it. The hour goes through the same code the pipeline
runs (``normalize``, the PostgreSQL sink, ``ghstream aggregate``), and the
expectations are counted from the raw file independently of that code.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from ghstream.analytics import run_aggregate
from ghstream.model import InvalidEvent, normalize
from ghstream.sinks.postgres import PostgresSink, apply_migrations

HOUR = "2015-01-01-12"
BATCH = 2000


def hour_path(shared_data: Path) -> Path:
    return shared_data / "gharchive" / f"{HOUR}.json.gz"


def read_raw(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as lines:
        return [orjson.loads(line) for line in lines if line.strip()]


async def store_hour(dsn: str, path: Path) -> int:
    """Migrate, store every event of ``path``, run the aggregate job; return events stored."""
    await apply_migrations(dsn)
    events = []
    for raw in read_raw(path):
        try:
            events.append(normalize(raw))
        except InvalidEvent:
            continue

    stored = 0
    async with PostgresSink(dsn) as sink:
        for start in range(0, len(events), BATCH):
            result = await sink.write_batch(events[start : start + BATCH])
            stored += result.inserted

    conn = await asyncpg.connect(dsn)
    try:
        await run_aggregate(conn)
    finally:
        await conn.close()
    return stored


def top_repo_names(path: Path, count: int) -> list[str]:
    """The ``count`` repositories with the most events, counted from the raw file.

    Ties at the cut are left out, so every name returned must be in any top ``count``.
    """
    counts = Counter(raw["repo"]["name"] for raw in read_raw(path) if raw.get("repo"))
    ranked = counts.most_common()
    cut = ranked[count][1] if len(ranked) > count else 0
    return [name for name, events in ranked[:count] if events > cut]


def event_type_counts(path: Path) -> Counter[str]:
    return Counter(raw["type"] for raw in read_raw(path))
