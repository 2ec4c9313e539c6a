"""What PostgreSQL and MongoDB must hold for a set of GH Archive files, counted independently.

Plain ``json`` and dictionaries, deliberately not ``ghstream.model``: the
pipeline tests compare the stores with these counts, so a mistake in the
model's normalization cannot hide behind the same mistake in the expectation.

Identity rules, as documented in the schema: an event is its ``id``, or (no id,
2012-2014 Timeline era) its whole content; a repository is its id when known,
else its ``owner/name``; an actor is its login.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HOURS = ("2012-02-15-0.json.gz", "2013-02-15-0.json.gz", "2015-01-01-12.json.gz")


@dataclass
class Expected:
    events: int = 0
    per_type: Counter[str] = field(default_factory=Counter)
    per_type_minute: Counter[tuple[datetime, str]] = field(default_factory=Counter)
    per_repo: Counter[str] = field(default_factory=Counter)
    repo_pushes: Counter[str] = field(default_factory=Counter)
    repo_commits: Counter[str] = field(default_factory=Counter)
    per_actor: Counter[str] = field(default_factory=Counter)


def read_raw(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _repo_key(raw: dict[str, Any]) -> str | None:
    repo = raw.get("repo") if isinstance(raw.get("repo"), dict) else raw.get("repository")
    if not isinstance(repo, dict):
        return None
    if repo.get("id") is not None:
        return str(repo["id"])
    name = repo.get("name")
    if "repository" in raw:  # Timeline era: short name and owner login
        name = f"{repo.get('owner')}/{name}"
    return name if isinstance(name, str) and name.strip("/").count("/") == 1 else None


def _actor(raw: dict[str, Any]) -> str | None:
    actor = raw.get("actor")
    login = actor.get("login") if isinstance(actor, dict) else actor
    return login or None


def _commits(payload: dict[str, Any]) -> int | None:
    for key in ("distinct_size", "size"):
        if isinstance(payload.get(key), int):
            return int(payload[key])
    listed = payload.get("commits", payload.get("shas"))
    return len(listed) if isinstance(listed, list) else None


def _minute(stamp: str) -> datetime:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
    return when.replace(second=0, microsecond=0)


def expected_from(paths: list[Path]) -> Expected:
    """Counts of the distinct events in ``paths``."""
    out = Expected()
    seen: set[str] = set()
    for path in paths:
        for raw in read_raw(path):
            identity = str(raw["id"]) if raw.get("id") else json.dumps(raw, sort_keys=True)
            if identity in seen:
                continue
            seen.add(identity)
            _count(out, raw)
    out.events = len(seen)
    return out


def _count(out: Expected, raw: dict[str, Any]) -> None:
    kind = raw["type"]
    out.per_type[kind] += 1
    out.per_type_minute[(_minute(raw["created_at"]), kind)] += 1

    repo = _repo_key(raw)
    if repo is not None:
        out.per_repo[repo] += 1
        if kind == "PushEvent":
            out.repo_pushes[repo] += 1
            out.repo_commits[repo] += _commits(raw.get("payload") or {}) or 0

    actor = _actor(raw)
    if actor is not None:
        out.per_actor[actor] += 1


async def stored_counts(conn: Any) -> Expected:
    """The same counts, read from PostgreSQL's aggregates (not from ``events``)."""
    out = Expected()
    for row in await conn.fetch("SELECT bucket, type, events FROM agg_type_minute"):
        out.per_type[row["type"]] += row["events"]
        out.per_type_minute[(row["bucket"], row["type"])] += row["events"]
    for row in await conn.fetch(
        "SELECT repo_key, sum(events) AS e, sum(pushes) AS p, sum(commits) AS c "
        "FROM agg_repo_hour GROUP BY repo_key"
    ):
        out.per_repo[row["repo_key"]] = row["e"]
        if row["p"]:
            out.repo_pushes[row["repo_key"]] = row["p"]
            out.repo_commits[row["repo_key"]] = row["c"]
    for row in await conn.fetch(
        "SELECT actor_login, sum(events) AS e FROM agg_actor_hour GROUP BY actor_login"
    ):
        out.per_actor[row["actor_login"]] = row["e"]
    out.events = await conn.fetchval("SELECT count(*) FROM events")
    return out


SNAPSHOT_TABLES = ("events", "repos", "agg_type_minute", "agg_repo_hour", "agg_actor_hour")


async def snapshot(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the result tables (``events`` without its ``stored_at``), sorted."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table in SNAPSHOT_TABLES:
        rows = await conn.fetch(f"SELECT * FROM {table}")
        tables[table] = sorted(tuple(v for k, v in row.items() if k != "stored_at") for row in rows)
    return tables


# --- running the pipeline ---------------------------------------------------------------------

PYTHON = sys.executable


def consume_args(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    postgres_dsn: str,
    mongo_url: str,
    mongo_db: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of a ``ghstream consume`` process."""
    return [
        PYTHON, "-m", "ghstream", "consume",
        "--bootstrap-servers", bootstrap, "--topic", topic, "--group", group,
        "--postgres-dsn", postgres_dsn, "--mongo-url", mongo_url, "--mongo-db", mongo_db,
        "--no-status", *extra,
    ]  # fmt: skip


async def start_process(args: list[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start ``args`` with stdout piped and stderr in ``log_path`` (read it when a test fails)."""
    log_file = log_path.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=log_file
        )
    finally:
        log_file.close()


async def finish(process: asyncio.subprocess.Process, log_path: Path, timeout_s: float = 240):
    """Wait for ``process``; return ``(returncode, stdout)``; kill it if it overruns."""
    try:
        async with asyncio.timeout(timeout_s):
            stdout, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"process overran; log:\n{tail(log_path)}") from None
    return process.returncode, stdout.decode()


def tail(log_path: Path, chars: int = 3000) -> str:
    """The end of a process log, for assertion messages."""
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else ""


async def wait_until(predicate, *, timeout_s: float = 120, every_s: float = 0.1) -> None:
    """Await ``predicate()`` (a coroutine function) until it is true."""
    async with asyncio.timeout(timeout_s):
        # Polling: the condition lives in another process or a database, not in an Event.
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(every_s)


async def ingest_archive(bootstrap: str, topic: str, paths: Sequence[Path]) -> int:
    """Publish ``paths`` to ``topic`` with ghstream's own ingest; return events published."""
    from ghstream.ingest import IngestOptions, run_ingest

    options = IngestOptions(bootstrap=bootstrap, topic=topic, archive=tuple(map(str, paths)))
    summary = await run_ingest(options, asyncio.Event())
    assert summary.failed == 0 and not summary.errors, summary.errors
    return summary.published


async def reference_snapshot(admin_dsn: str, paths: Sequence[Path]) -> dict[str, list[tuple]]:
    """The tables a clean run over ``paths`` must produce: the events written once, directly."""
    import asyncpg

    from ghstream.model import normalize
    from ghstream.sinks.postgres import PostgresSink, apply_migrations

    database = f"ghstream_reference_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        dsn = f"{admin_dsn.rpartition('/')[0]}/{database}"
        await apply_migrations(dsn)
        events = [normalize(raw) for path in paths for raw in read_raw(path)]
        async with PostgresSink(dsn) as sink:
            for start in range(0, len(events), 2000):
                await sink.write_batch(events[start : start + 2000])
            async with sink.pool.acquire() as conn:
                return await snapshot(conn)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def mongo_ids(mongo_url: str, db_name: str) -> list[str]:
    """Every ``_id`` in the events collection (duplicates would show as repeats)."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        cursor = client[db_name]["events"].find({}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]
    finally:
        await client.close()
