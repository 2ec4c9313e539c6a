"""Stage 2: ``ghstream ingest --archive`` into Kafka, against kcat and the seed's producer.

Each repetition gets a fresh 6-partition topic (created before the clock starts,
as ``make services`` would) and every side runs as a subprocess timed from
spawn to exit, so interpreter start-up counts against ghstream and the Python
peer alike.

* ``kcat -P``: librdkafka in C, the same lines (read from the plain NDJSON,
  so it does not even pay for gunzip), zstd, acks=all, idempotence, as ghstream.
* the seed design (:mod:`bench.peers.naive_producer`): kafka-python, json per
  event, one ``send`` per event.

A fourth row, not a peer, is ghstream's publisher alone
(:mod:`bench.publish_only`): the same envelopes, encoded beforehand by
``ghstream ingest --dry-run``, sent through :class:`ghstream.kafka.EventPublisher`.
Against kcat it shows what Kafka costs ghstream apart from parsing.

Every run is checked: the topic must hold exactly the file's events afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from pathlib import Path

import orjson

from bench import infra
from bench.context import Context
from bench.harness import Result, alternate, log
from ghstream import wire

PEERS = infra.ROOT / "bench" / "peers"
_own_rates: list[float] = []
"""ghstream's own events/s (its summary: from start of reading to the last confirmation)."""


def _ghstream(ctx: Context, topic: str) -> None:
    result = infra.run(
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
    summary = orjson.loads(result.stdout)
    _own_rates.append(summary["events_per_s"])
    if summary["published"] != ctx.modern_events:
        raise AssertionError(f"ghstream published {summary['published']} of {ctx.modern_events}")


def _kcat(ctx: Context, topic: str) -> None:
    infra.run(
        [
            "kcat",
            "-P",
            "-b",
            infra.BOOTSTRAP,
            "-t",
            topic,
            "-z",
            infra.COMPRESSION,
            "-X",
            "enable.idempotence=true",
            "-X",
            "acks=all",
            "-X",
            f"message.max.bytes={infra.MAX_MESSAGE_BYTES}",
        ],
        stdin=ctx.modern_plain,
    )


def naive_limit(ctx: Context) -> int:
    """Events the seed producer sends: its rate is steady long before a whole modern hour."""
    return min(ctx.modern_events, 2_000 if ctx.quick else 15_000)


def records_file(ctx: Context) -> Path:
    """``key<TAB>envelope`` lines of the modern hour, as ``ghstream ingest`` would send them."""
    path = ctx.modern_plain.with_suffix(".records")
    if path.exists() and path.stat().st_mtime >= ctx.modern_plain.stat().st_mtime:
        return path
    log(f"  writing {path.name} (envelopes and keys for the publisher-alone row)")
    envelopes = path.with_suffix(".envelopes")
    with envelopes.open("wb") as out:
        command = infra.ghstream("ingest", "--archive", ctx.modern_gz, "--dry-run")
        subprocess.run(command, stdout=out, stderr=subprocess.DEVNULL, check=True)
    partial = path.with_suffix(".records.partial")
    with envelopes.open("rb") as values, partial.open("wb") as out:
        for value in values:
            envelope = wire.decode(value)
            assert envelope.event is not None
            out.write((wire.event_key(envelope.event) or b"") + b"\t" + value)
    envelopes.unlink()
    partial.replace(path)
    return path


_publisher_rates: list[float] = []
"""The publisher-alone side's own events/s, from its first send to its last confirmation."""


def _publish_only(ctx: Context, topic: str) -> None:
    records = records_file(ctx)
    command = [infra.BIN / "python", "-m", "bench.publish_only", records, topic, infra.BOOTSTRAP]
    _publisher_rates.append(float(infra.run(command).stdout.split()[1]))


def _naive(ctx: Context, topic: str) -> None:
    infra.run(
        [
            infra.BIN / "python",
            PEERS / "naive_producer.py",
            ctx.modern_gz,
            topic,
            infra.BOOTSTRAP,
            str(naive_limit(ctx)),
        ]
    )


def _measure(ctx: Context, produce: object, events: int | None = None) -> float:
    """Events/s of one run of ``produce`` into a fresh topic, checked against the topic."""
    events = ctx.modern_events if events is None else events

    async def prepare() -> str:
        name = infra.unique("ingest").replace("_", "-")
        await infra.create_topics([name])
        return name

    topic = asyncio.run(prepare())
    try:
        started = time.perf_counter()
        produce(ctx, topic)  # type: ignore[operator]
        elapsed = time.perf_counter() - started
        stored = asyncio.run(infra.topic_size(topic))
        if stored != events:
            raise AssertionError(f"{produce}: topic holds {stored} of {events}")
        return events / elapsed
    finally:
        asyncio.run(infra.delete_topics([topic]))


def run(ctx: Context) -> list[Result]:
    log(f"stage 2 ingest: {ctx.modern_events} events")
    records_file(ctx)
    values = alternate(
        [
            ("ghstream", lambda: _measure(ctx, _ghstream)),
            ("kcat", lambda: _measure(ctx, _kcat)),
            ("ghstream publisher alone", lambda: _measure(ctx, _publish_only)),
            ("kafka-python", lambda: _measure(ctx, _naive, naive_limit(ctx))),
        ],
        reps=ctx.reps,
        warmup=ctx.warmup,
    )
    label = f"modern {ctx.modern_events // 1000}k"
    kcat = Result("2 ingest", f"kcat -P zstd ({label})", "events/s", values["kcat"])
    naive = Result(
        "2 ingest",
        f"kafka-python seed producer ({label})",
        "events/s",
        values["kafka-python"],
        note=f"first {naive_limit(ctx):,} events",
    )
    vs_kcat = Result(
        "2 ingest",
        f"ghstream ingest --archive ({label})",
        "events/s",
        values["ghstream"],
        peer=kcat,
        goal=">= 0.5x kcat (< 0.3x defect)",
    )
    vs_naive = Result(
        "2 ingest",
        f"ghstream ingest --archive ({label})",
        "events/s",
        values["ghstream"],
        peer=naive,
        goal=">= 3x seed",
    )
    vs_kcat.met = (vs_kcat.ratio() or 0) >= 0.5
    if _own_rates:
        vs_kcat.note = f"{statistics.median(_own_rates):,.0f}/s after start-up"
    vs_naive.met = (vs_naive.ratio() or 0) >= 3
    publisher = Result(
        "2 ingest",
        f"ghstream publisher alone: the same envelopes encoded beforehand ({label})",
        "events/s",
        values["ghstream publisher alone"],
        peer=kcat,
        note="what Kafka costs ghstream, without parsing",
    )
    if _publisher_rates:
        rate = statistics.median(_publisher_rates)
        publisher.note += f"; {rate:,.0f}/s once its input is loaded"
    return [vs_kcat, kcat, publisher, vs_naive, naive]
