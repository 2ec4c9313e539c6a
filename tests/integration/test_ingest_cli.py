"""`ghstream ingest` on the command line: output, exit codes, errors, and Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from ghstream import wire
from ghstream.cli import app

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "archive"
BAD_LINES = str(FIXTURES / "bad_lines.ndjson")
REPO_ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["ingest", *args], catch_exceptions=False)


def envelope_ids(stdout: bytes | str) -> list[str]:
    lines = stdout.encode() if isinstance(stdout, str) else stdout
    return [wire.decode(line).event.id for line in lines.splitlines()]  # type: ignore[union-attr]


def test_dry_run_prints_envelopes_and_a_summary() -> None:
    result = invoke("--archive", BAD_LINES, "--dry-run")
    assert result.exit_code == 0
    assert envelope_ids(result.stdout) == ["1", "2", "3", "5", "6", "7", "9"]
    assert "printed 7" in result.stderr
    assert "dead-lettered 5" in result.stderr
    assert "recovered 3" in result.stderr


def test_strict_fails_on_bad_lines() -> None:
    result = invoke("--archive", BAD_LINES, "--dry-run", "--strict")
    assert result.exit_code == 1
    assert len(envelope_ids(result.stdout)) == 7, "strict still publishes what it can"


def test_types_and_limit() -> None:
    pushes = invoke("--archive", BAD_LINES, "--dry-run", "--types", "PushEvent, BrandNewEvent")
    assert envelope_ids(pushes.stdout) == ["1", "7", "9"]
    assert "skipped by filter 4" in pushes.stderr
    limited = invoke("--archive", BAD_LINES, "--dry-run", "--limit", "2")
    assert envelope_ids(limited.stdout) == ["1", "2"]
    assert "limit reached" in limited.stderr


def test_events_read_past_the_limit_are_accounted_for() -> None:
    args = ("--archive", BAD_LINES, "--dry-run", "--json", "--limit", "1", "--types", "PushEvent")
    result = invoke(*args)
    summary = orjson.loads(result.stderr[result.stderr.index("{\n") :])
    (source,) = summary["sources"]
    assert source["published"] == 1
    # Every event read is published, filtered out, or named in a note as past the limit.
    (note,) = [n for n in source["notes"] if "past --limit" in n]
    past = int(note.split()[0])
    assert past > 0
    assert source["events"] == source["published"] + source["filtered"] + past


def test_nothing_published_is_a_failure() -> None:
    result = invoke("--archive", BAD_LINES, "--dry-run", "--types", "NoSuchEvent")
    assert result.exit_code == 1
    assert result.stdout == ""


def test_json_summary() -> None:
    result = invoke("--archive", BAD_LINES, "--dry-run", "--json")
    assert result.exit_code == 0
    summary = orjson.loads(result.stderr[result.stderr.index("\n{\n") :])
    assert summary["published"] == 7
    assert summary["bad"] == 5
    (source,) = summary["sources"]
    assert (source["source"], source["lines"], source["recovered"]) == (BAD_LINES, 11, 3)


def test_unreachable_broker_exits_3_and_names_the_flag() -> None:
    result = invoke("--archive", BAD_LINES, "--bootstrap-servers", "127.0.0.1:1")
    assert result.exit_code == 3
    assert "StartupError" in result.stderr
    assert "--bootstrap-servers" in result.stderr
    assert "GHSTREAM_KAFKA_BOOTSTRAP" in result.stderr


def test_unknown_source_exits_2() -> None:
    result = invoke("--archive", "no-such-thing", "--dry-run")
    assert result.exit_code == 2
    assert "ConfigError" in result.stderr
    assert "--archive no-such-thing" in result.stderr


async def test_publishes_to_kafka_and_reports_confirmed_counts(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = await topic_factory(2, 1)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghstream", "ingest", "--archive", BAD_LINES,
        "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    summary = orjson.loads(stdout)
    assert (summary["published"], summary["dead_lettered"]) == (7, 5)
    assert summary["sources"][0]["published"] == 7


@pytest.mark.parametrize("workers", ["0", "1"])
async def test_ctrl_c_flushes_and_every_confirmed_event_is_in_the_topic(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path, workers: str
) -> None:
    """1. start a long backfill; 2. once events reach the topic, SIGINT it;
    3. it exits 130 with a summary marked interrupted; 4. the topic holds exactly
    the events the summary calls published."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    big = big_file(tmp_path, 300_000)
    topic = await topic_factory(3, 1)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghstream", "ingest", "--archive", str(big),
        "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--json",
        "--parse-workers", workers,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(3)]
    try:
        async with asyncio.timeout(60):
            while True:  # until the first events are in the topic
                if sum((await consumer.end_offsets(partitions)).values()) > 0:
                    break
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        in_topic = sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()
        if process.returncode is None:
            process.kill()

    assert process.returncode == 130, stderr.decode()
    summary = orjson.loads(stdout)
    assert summary["interrupted"] is True
    assert 0 < summary["published"] < 300_000
    assert in_topic == summary["published"]
    assert b"shutting down, press Ctrl-C again to force" in stderr


def test_help_explains_the_sources() -> None:
    result = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("--archive", "2015-01-01-12", "--dry-run", "--types", "Exit status"):
        assert text in result.stdout


def big_file(tmp_path: Path, count: int) -> Path:
    """``count`` copies of the fixture's first event, each with its own id."""
    path = tmp_path / "big.ndjson"
    line = (FIXTURES / "bad_lines.ndjson").read_bytes().splitlines()[0]
    with path.open("wb") as out:
        for n in range(count):
            out.write(line.replace(b'"id":"1"', b'"id":"%d"' % n) + b"\n")
    return path


def test_dry_run_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    source = big_file(tmp_path, 50_000)
    shell = f"{sys.executable} -m ghstream ingest --archive {source} --dry-run | head -n 1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, cwd=REPO_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.splitlines()) == 1
    assert b"BrokenPipe" not in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_dry_run_onto_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    source = big_file(tmp_path, 2_000)
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "ghstream", "ingest", "--archive", str(source), "--dry-run"],
            stdout=full, stderr=subprocess.PIPE, cwd=REPO_ROOT, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr.decode()
    assert b"cannot write the dry-run output: No space left on device" in result.stderr
    assert b"Traceback" not in result.stderr
    assert b"Exception ignored" not in result.stderr
