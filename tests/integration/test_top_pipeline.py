"""The whole way: `ingest --archive` → Kafka → `consume --until-idle` → `aggregate` → `top`."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_top_archive import expected_contributors, parse, read_hour
from typer.testing import CliRunner

from ghstream.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

HOUR = "2015-01-01-12"
RANGE = ["--since", "2015-01-01T12:00Z", "--until", "2015-01-01T13:00Z"]


async def ghstream(*args: str) -> str:
    """Run a command as a user would; in a thread, since each command runs its own loop."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, f"ghstream {' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


async def test_archive_hour_through_kafka_to_top(
    topic_factory: Any,
    kafka_bootstrap: str,
    postgres_dsn: str,
    mongo_url: str,
    mongo_db_name: str,
    shared_data: Path,
) -> None:
    path = shared_data / "gharchive" / f"{HOUR}.json.gz"
    topic = await topic_factory(partitions=3, replication_factor=1)
    kafka = ["--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    stores = ["--postgres-dsn", postgres_dsn, "--mongo-url", mongo_url, "--mongo-db", mongo_db_name]

    await ghstream("ingest", "--archive", str(path), *kafka)
    await ghstream("consume", *kafka, *stores, "--group", f"{topic}-g", "--until-idle", "3")
    await ghstream("aggregate", "--postgres-dsn", postgres_dsn)
    types = orjson.loads(
        await ghstream("top", "--types", *RANGE, "--json", "--postgres-dsn", postgres_dsn)
    )
    contributors = orjson.loads(
        await ghstream("top", *RANGE, "--json", "--postgres-dsn", postgres_dsn)
    )

    events = [parse(raw) for raw in read_hour(path)]
    assert {r["type"]: r["events"] for r in types["rows"]} == dict(Counter(e.type for e in events))
    assert types["coverage"]["events"] == len(events)
    assert [
        (r["login"], r["contributions"], r["pushes"], r["commits"], r["pushes_unknown"], r["repos"])
        for r in contributors["rows"]
    ] == expected_contributors(events)
