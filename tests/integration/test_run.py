"""`ghstream run`: ingest and consume in one process, one shutdown, failures stop both."""

from __future__ import annotations

import json
import signal
import socket
import uuid
from pathlib import Path

import asyncpg
import pytest
from pipeline_expected import (
    HOURS,
    PYTHON,
    expected_from,
    finish,
    mongo_ids,
    start_process,
    stored_counts,
    tail,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


def _run_args(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db, *extra) -> list[str]:
    return [
        PYTHON, "-m", "ghstream", "run", "--bootstrap-servers", kafka_bootstrap,
        "--topic", topic, "--group", f"test-{uuid.uuid4().hex[:8]}",
        "--postgres-dsn", postgres_dsn, "--mongo-url", mongo_url, "--mongo-db", mongo_db,
        "--no-status", "--json", *extra,
    ]  # fmt: skip


async def test_run_backfills_an_hour_and_ends_once_it_is_stored(
    topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, shared_data,
    tmp_path,
) -> None:  # fmt: skip
    """`ghstream run --archive HOUR --until-idle 2`. Expected: exit 0 after ingest finished
    and the consumer drained; the stores hold exactly the hour's events."""
    hour = shared_data / "gharchive" / HOURS[0]
    topic = await topic_factory(partitions=6)
    log = tmp_path / "run.log"
    args = _run_args(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name,
                     "--archive", str(hour), "--until-idle", "2")  # fmt: skip

    code, out = await finish(await start_process(args, log), log)

    expected = expected_from([hour])
    result = json.loads(out)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        stored = await stored_counts(conn)
    finally:
        await conn.close()
    assert code == 0, tail(log)
    assert result["ingest"]["published"] == result["consume"]["consumed"]
    assert result["consume"]["stopped_by"] == "idle"
    assert stored.per_type == expected.per_type
    assert stored.per_repo == expected.per_repo
    assert stored.per_actor == expected.per_actor
    assert len(set(await mongo_ids(mongo_url, mongo_db_name))) == expected.events


async def test_sigterm_stops_both_tasks_cleanly(
    topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name, shared_data,
    tmp_path,
) -> None:  # fmt: skip
    """1. `ghstream run --archive HOUR` (no --until-idle: it would run forever). 2. Once the
    hour is stored, SIGTERM. Expected: exit 0 with both summaries."""
    hour = shared_data / "gharchive" / HOURS[0]
    topic = await topic_factory(partitions=6)
    log = tmp_path / "run.log"
    expected = expected_from([hour]).events
    process = await start_process(
        _run_args(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name,
                  "--archive", str(hour)),
        log,
    )  # fmt: skip

    async def stored_all() -> bool:
        try:
            conn = await asyncpg.connect(postgres_dsn)
        except OSError:
            return False
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events")) >= expected
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await conn.close()

    try:
        await wait_until(stored_all, timeout_s=180)
        process.send_signal(signal.SIGTERM)
        code, out = await finish(process, log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    result = json.loads(out)
    assert code == 0, tail(log)
    assert result["consume"]["stopped_by"] == "stop"
    assert result["ingest"]["published"] == expected


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("failing", ["consume", "ingest"])
async def test_when_one_task_fails_the_other_stops_and_run_exits_non_zero(
    failing, topic_factory, kafka_bootstrap, postgres_dsn, mongo_url, mongo_db_name,
    shared_data, tmp_path,
) -> None:  # fmt: skip
    """consume: MongoDB unreachable, so the consumer cannot start. ingest: an archive
    source that does not exist. Expected: the process ends (the other task stopped too),
    exits non-zero and prints the failure's message."""
    topic = await topic_factory(partitions=6)
    source = shared_data / "gharchive" / HOURS[0]
    if failing == "consume":
        mongo_url = f"mongodb://127.0.0.1:{_closed_port()}"
    else:
        source = Path(tmp_path / "missing-2015-01-01-0.json.gz")
    log = tmp_path / "run.log"
    args = _run_args(kafka_bootstrap, topic, postgres_dsn, mongo_url, mongo_db_name,
                     "--archive", str(source), "--until-idle", "2")  # fmt: skip

    code, _ = await finish(await start_process(args, log), log, timeout_s=120)

    message = tail(log)
    assert code != 0, message
    if failing == "consume":
        assert code == 3 and "--mongo-url" in message
    else:
        assert "missing-2015-01-01-0.json.gz" in message
