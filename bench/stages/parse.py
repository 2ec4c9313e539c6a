"""Stage 1: archive file to core events to wire envelopes, no broker, against orjson.loads.

ghstream's side is what ``ghstream ingest --archive`` does before Kafka:
:func:`ghstream.archive.read_source` (gunzip, split, parse, repair, normalize)
then :func:`ghstream.wire.encode_event` and :func:`ghstream.wire.event_key` per
event. The peer is the floor of any JSON pipeline: the same gunzip and line
split, and one ``orjson.loads`` per line, nothing else.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from pathlib import Path

import orjson

from bench.context import Context
from bench.harness import Result, alternate, log
from ghstream import wire
from ghstream.archive import FileStats, Source, read_source
from ghstream.lines import ParsedBatch


async def _ghstream(path: Path) -> int:
    stats = FileStats(path.name)
    encode, key = wire.encode_event, wire.event_key
    count = 0
    async for batch in read_source(Source(name=path.name, path=path), stats):
        assert isinstance(batch, ParsedBatch)  # no process pool: parsed in this process
        for event, raw in batch.events:
            encode(event, raw)
            key(event)
        count += len(batch.events)
    return count


def ghstream_parse(path: Path) -> int:
    """Events parsed, normalized and enveloped from ``path``."""
    return asyncio.run(_ghstream(path))


def orjson_floor(path: Path) -> int:
    """Lines of ``path`` parsed with ``orjson.loads``, after the same streaming gunzip."""
    loads = orjson.loads
    inflate = zlib.decompressobj(wbits=31)
    rest = b""
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines = (rest + inflate.decompress(chunk)).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    loads(line)
                    count += 1
    if rest.strip():
        loads(rest)
        count += 1
    return count


def _inflated_mb(path: Path) -> float:
    inflate = zlib.decompressobj(wbits=31)
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            size += len(inflate.decompress(chunk))
    return size / 1e6


def run(ctx: Context) -> list[Result]:
    files = [("2015-01-01-12", ctx.real_hour)]
    if not ctx.quick:
        files.append((f"modern {ctx.modern_events // 1000}k", ctx.modern_gz))
    results: list[Result] = []
    for label, path in files:
        log(f"stage 1 parse: {label}")
        events = orjson_floor(path)
        megabytes = _inflated_mb(path)

        def timed(fn: object, path: Path = path, events: int = events) -> float:
            started = time.perf_counter()
            count = fn(path)  # type: ignore[operator]
            elapsed = time.perf_counter() - started
            if count != events:
                raise AssertionError(f"{fn}: {count} events, expected {events}")
            return events / elapsed

        values = alternate(
            [("ghstream", lambda: timed(ghstream_parse)), ("orjson", lambda: timed(orjson_floor))],
            reps=ctx.reps,
            warmup=ctx.warmup,
        )
        peer = Result("1 parse", f"orjson.loads per line ({label})", "events/s", values["orjson"])
        mine = Result(
            "1 parse",
            f"ghstream parse+normalize+envelope ({label})",
            "events/s",
            values["ghstream"],
            peer=peer,
            goal=">= 0.5x orjson",
        )
        mine.met = (mine.ratio() or 0) >= 0.5
        mb_per_event = megabytes / events
        mine.note = f"{mine.median * mb_per_event:.0f} MB/s"
        peer.note = f"{peer.median * mb_per_event:.0f} MB/s"
        results += [mine, peer]
    return results
