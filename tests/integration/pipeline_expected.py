"""What PostgreSQL and MongoDB must hold for a set of GH Archive files, counted independently.

Plain ``json`` and dictionaries, deliberately not ``ghstream.model``: the
pipeline tests compare the stores with these counts, so a mistake in the
model's normalization cannot hide behind the same mistake in the expectation.

Identity rules, as documented in the schema: an event is its ``id``, or (no id,
2012-2014 Timeline era) its whole content; a repository is its id when known,
else its ``owner/name``; an actor is its login.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
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
