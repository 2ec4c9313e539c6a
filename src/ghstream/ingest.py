"""The ingest pipeline: GH Archive files (or the live Events API) into the Kafka topic.

:func:`run_ingest` is what ``ghstream ingest`` and ``ghstream run`` call. With
archive sources it streams each file through :func:`ghstream.archive.read_source`,
filters by type, and hands events to an :class:`~ghstream.kafka.EventPublisher`
(or, with ``dry_run``, writes the envelopes to stdout). Bad lines go to the
dead-letter topic with their file, line number and reason. Without archive
sources it runs the live poller of :mod:`ghstream.github`.

Stopping: when ``stop`` is set the pipeline finishes the batch in hand,
flushes, and returns a summary marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from ghstream import __version__, wire
from ghstream.archive import FileStats, Source, read_source, resolve_sources
from ghstream.config import DEFAULT_API_URL, DEFAULT_BOOTSTRAP, DEFAULT_TOPIC
from ghstream.errors import ConfigError, GhstreamError, SourceError
from ghstream.kafka import DeliveryError, EventPublisher, ensure_topic
from ghstream.lines import EncodedBatch
from ghstream.model import Event

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
_T = TypeVar("_T")

HTTP_TIMEOUT_S = 60.0
MAX_PARSE_WORKERS = 3
POOL_MIN_BYTES = 4 << 20
"""Smaller local files are parsed in-process: starting workers would cost more."""
GIL_SWITCH_INTERVAL_S = 0.001
"""How soon the parsing thread hands the GIL to a waiting one during a backfill.

The event loop holds the GIL while it parses; the threads that inflate and
compress release it for zlib and zstd and need it back after each block. At
Python's default 5 ms they waited ~1 s per modern-size hour (bench/RESULTS.md).
"""
_DRY_RUN_DEAD_LETTER_LOGS = 20


@dataclass
class IngestOptions:
    """Everything ``ghstream ingest`` was asked to do. An empty :attr:`archive` means live mode."""

    bootstrap: str = DEFAULT_BOOTSTRAP
    topic: str = DEFAULT_TOPIC
    partitions: int = 6
    replication_factor: int = 1
    archive: tuple[str, ...] = ()
    """``--archive`` sources: files, directories, URLs, GH Archive hours or ranges."""
    types: tuple[str, ...] = ()
    """Event types to publish; empty publishes every type."""
    limit: int | None = None
    """Stop after publishing this many events."""
    dry_run: bool = False
    strict: bool = False
    parse_workers: int | None = None
    """Processes that parse large archive files; ``None`` picks cores minus two (at most
    :data:`MAX_PARSE_WORKERS`), 0 parses in this process."""
    # live mode (ghstream.github)
    api_url: str = DEFAULT_API_URL
    repos: tuple[str, ...] = ()
    orgs: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    watch_file: Path | None = None
    token_file: Path | None = None
    min_interval_s: float | None = None
    once: bool = False
    json_status: bool = False


@dataclass
class SourceSummary:
    """What happened to one archive source."""

    source: str
    lines: int = 0
    events: int = 0
    recovered: int = 0
    bad: int = 0
    filtered: int = 0
    published: int = 0
    truncated: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass
class IngestSummary:
    """Totals of one ingest run; :attr:`published` and :attr:`dead_lettered` are confirmed."""

    mode: str
    dry_run: bool = False
    read: int = 0
    """Events parsed from the sources (before the type filter)."""
    published: int = 0
    recovered: int = 0
    bad: int = 0
    """Bad lines (or pieces of lines) found; each was sent to the dead-letter topic."""
    dead_lettered: int = 0
    filtered: int = 0
    trimmed: int = 0
    failed: int = 0
    limit_reached: bool = False
    interrupted: bool = False
    output_closed: bool = False
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    sources: list[SourceSummary] = field(default_factory=list)
    live: Any = None

    @property
    def events_per_s(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``--json``)."""
        data = dataclasses.asdict(self)
        live = self.live
        if dataclasses.is_dataclass(live) and not isinstance(live, type):
            data["live"] = dataclasses.asdict(live)
        elif live is not None and not isinstance(live, (dict, list, str, int, float)):
            data["live"] = repr(live)
        data["events_per_s"] = round(self.events_per_s, 1)
        return data


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for a progress display, sent after each batch."""

    source: str
    source_index: int
    source_count: int
    read: int
    published_or_queued: int
    bad: int
    bytes_read: int


ProgressCallback = Callable[[Progress], None]


class Sink(Protocol):
    """What the pipeline publishes to: :class:`EventPublisher` or :class:`DryRunSink`."""

    published: int
    dead_lettered: int
    failed: int
    trimmed: int

    async def publish_many(
        self, events: Iterable[tuple[Event, bytes | dict[str, Any]]], *, source: str | None = None
    ) -> None: ...

    async def publish_encoded_many(
        self, records: Iterable[tuple[bytes | None, bytes]], *, source: str | None = None
    ) -> None: ...

    async def dead_letter(
        self, reason: str, payload: bytes, *, source: str | None = None, line: int | None = None
    ) -> None: ...

    async def flush(self) -> None: ...


class OutputClosed(Exception):
    """Whoever read the dry-run output went away (``| head``)."""


class OutputError(GhstreamError):
    """The dry-run output cannot be written (a full disk, a closed descriptor)."""


class DryRunSink:
    """Writes one envelope per line to ``out`` instead of Kafka; dead letters are only logged."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.published = 0
        self.gaps_published = 0
        self.dead_lettered = 0
        self.failed = 0
        self.trimmed = 0
        self.published_by_source: dict[str, int] = {}

    async def publish(
        self, event: Event, raw: bytes | dict[str, Any], *, source: str | None = None
    ) -> None:
        await self.publish_many(((event, raw),), source=source)

    async def publish_many(
        self, events: Iterable[tuple[Event, bytes | dict[str, Any]]], *, source: str | None = None
    ) -> None:
        encode = wire.encode_event
        records = ((None, encode(event, raw)) for event, raw in events)
        await self.publish_encoded_many(records, source=source)

    async def publish_encoded_many(
        self, records: Iterable[tuple[bytes | None, bytes]], *, source: str | None = None
    ) -> None:
        for _, value in records:
            self._write(value)
            self.published += 1
            if source is not None:
                self.published_by_source[source] = self.published_by_source.get(source, 0) + 1

    async def publish_gap(
        self,
        *,
        feed: str,
        detected_at: datetime,
        estimated_missed: int | None = None,
        gap_id: str | None = None,
    ) -> None:
        self._write(wire.encode_gap(feed, detected_at, estimated_missed, gap_id=gap_id))
        self.gaps_published += 1

    async def dead_letter(
        self, reason: str, payload: bytes, *, source: str | None = None, line: int | None = None
    ) -> None:
        self.dead_lettered += 1
        if self.dead_lettered <= _DRY_RUN_DEAD_LETTER_LOGS:
            log.warning("dead letter %s:%s: %s", source, line, reason)

    async def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc
        except OSError as exc:
            raise self._cannot_write(exc) from exc

    def _write(self, envelope: bytes) -> None:
        try:
            self._out.write(envelope + b"\n")
        except BrokenPipeError as exc:
            raise OutputClosed from exc
        except OSError as exc:
            raise self._cannot_write(exc) from exc

    def _cannot_write(self, exc: OSError) -> OutputError:
        # What is still buffered cannot be written either: let it go to /dev/null at
        # exit instead of a second traceback.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._out.fileno())
        return OutputError(f"cannot write the dry-run output: {exc.strerror or exc}")


def _refuse_live_flags(options: IngestOptions) -> None:
    """A backfill reads no feed: a live-polling flag beside --archive is a mistake to name."""
    given = [
        flag
        for flag, value in (
            ("--repo", options.repos),
            ("--org", options.orgs),
            ("--user", options.users),
            ("--watch-file", options.watch_file),
            ("--token-file", options.token_file),
            ("--min-interval", options.min_interval_s),
            ("--once", options.once),
        )
        if value
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for live polling and "
            "cannot be combined with --archive; run them as two commands"
        )


async def run_ingest(
    options: IngestOptions,
    stop: asyncio.Event,
    *,
    on_progress: ProgressCallback | None = None,
    out: BinaryIO | None = None,
) -> IngestSummary:
    """Run one ingest: archive backfill when ``options.archive`` is set, else the live poller.

    ``out`` receives the dry-run envelopes (stdout by default). Raises
    :class:`~ghstream.errors.StartupError` when Kafka cannot be reached,
    :class:`~ghstream.errors.ConfigError` for unusable options.
    """
    if not options.archive:
        return await _run_live(options, stop)

    _refuse_live_flags(options)
    sources = resolve_sources(options.archive)
    summary = IngestSummary(mode="archive", dry_run=options.dry_run)
    started = time.monotonic()
    if options.dry_run:
        sink = DryRunSink(out if out is not None else sys.stdout.buffer)
        await _backfill(options, sources, sink, stop, on_progress, summary)
    else:
        await _ensure_topic(options)
        publisher = EventPublisher(options.bootstrap, options.topic)
        try:
            async with publisher:
                await _backfill(options, sources, publisher, stop, on_progress, summary)
        except DeliveryError as exc:
            summary.errors.append(str(exc))
            log.error("%s", exc)
        _confirm(summary, publisher)
    summary.elapsed_s = time.monotonic() - started
    return summary


async def _ensure_topic(options: IngestOptions) -> None:
    await ensure_topic(
        options.bootstrap,
        options.topic,
        partitions=options.partitions,
        replication_factor=options.replication_factor,
    )


def _confirm(summary: IngestSummary, publisher: EventPublisher) -> None:
    """Take the confirmed counts from the publisher once it has flushed."""
    summary.published = publisher.published
    summary.dead_lettered = publisher.dead_lettered
    summary.failed = publisher.failed
    summary.trimmed = publisher.trimmed
    for item in summary.sources:
        item.published = publisher.published_by_source.get(item.source, 0)


async def _backfill(
    options: IngestOptions,
    sources: list[Source],
    sink: Sink,
    stop: asyncio.Event,
    on_progress: ProgressCallback | None,
    summary: IngestSummary,
) -> None:
    pipeline = _Pipeline(options, sink, stop, on_progress, summary, len(sources))
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(_gil_switch_interval(GIL_SWITCH_INTERVAL_S))
        client = None
        if any(source.url is not None for source in sources):
            # Only when needed: building the TLS context costs a noticeable fraction
            # of a second, more than reading a small local file.
            import httpx

            headers = {"User-Agent": f"ghstream/{__version__}"}
            client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=True, headers=headers)
            )
        pipeline.pool = await stack.enter_async_context(_WorkerPool(options.parse_workers))
        try:
            for index, source in enumerate(sources):
                if pipeline.done():
                    break
                await pipeline.run_source(index, source, client)
            await sink.flush()
        except OutputClosed:
            summary.output_closed = True
            log.debug("the dry-run output was closed; stopping")

    summary.interrupted = stop.is_set()
    summary.published = sink.published
    summary.dead_lettered = sink.dead_lettered
    summary.trimmed = sink.trimmed
    if isinstance(sink, DryRunSink):
        for item in summary.sources:
            item.published = sink.published_by_source.get(item.source, 0)


@contextlib.contextmanager
def _gil_switch_interval(seconds: float) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class _Pipeline:
    """The per-event loop, with the counters it keeps across sources."""

    def __init__(
        self,
        options: IngestOptions,
        sink: Sink,
        stop: asyncio.Event,
        on_progress: ProgressCallback | None,
        summary: IngestSummary,
        source_count: int,
    ) -> None:
        self.sink = sink
        self.stop = stop
        self.on_progress = on_progress
        self.summary = summary
        self.source_count = source_count
        self.types = frozenset(options.types) or None
        self.remaining = options.limit
        self.queued = 0
        self.pool: _WorkerPool | None = None

    def done(self) -> bool:
        return self.stop.is_set() or self.summary.limit_reached or self.summary.output_closed

    async def run_source(
        self, index: int, source: Source, client: httpx.AsyncClient | None
    ) -> None:
        stats = FileStats(source.name)
        item = SourceSummary(source=source.name)
        self.summary.sources.append(item)
        started = time.monotonic()
        log.info("reading %s", source.name)
        try:
            pool = self.pool.for_source(source) if self.pool is not None else None
            reader = read_source(source, stats, client=client, pool=pool)
            async with contextlib.aclosing(reader) as batches:
                async for batch in batches:
                    if isinstance(batch, EncodedBatch):
                        item.filtered += await self._publish_encoded(batch.records, stats)
                    else:
                        item.filtered += await self._publish(batch.events, stats)
                    for bad in batch.bad:
                        await self.sink.dead_letter(
                            bad.reason, bad.payload, source=source.name, line=bad.line
                        )
                    self._report(index, source, stats)
                    if self.done():
                        break
                    # Parsing never awaits: give the producer's sender a turn
                    # between batches, or it stalls until the file is read.
                    await asyncio.sleep(0)
        except SourceError as exc:
            message = str(exc)
            if not message.startswith(source.name):
                message = f"{source.name}: {message}"
            stats.error = message
            self.summary.errors.append(message)
            log.error("%s", message)
        finally:
            self._close_source(item, stats, time.monotonic() - started)

    async def _publish(
        self, events: list[tuple[Event, bytes | dict[str, Any]]], stats: FileStats
    ) -> int:
        """Publish a batch's events; returns how many the type filter skipped."""
        types = self.types
        if types is not None:
            kept = [pair for pair in events if pair[0].type in types]
            filtered, events = len(events) - len(kept), kept
        else:
            filtered = 0
        events = self._apply_limit(events, stats)
        await self.sink.publish_many(events, source=stats.source)
        self.queued += len(events)
        return filtered

    async def _publish_encoded(
        self, records: list[tuple[str, bytes | None, bytes]], stats: FileStats
    ) -> int:
        """:meth:`_publish` for envelopes a worker process already encoded."""
        types = self.types
        if types is not None:
            kept = [record for record in records if record[0] in types]
            filtered, records = len(records) - len(kept), kept
        else:
            filtered = 0
        records = self._apply_limit(records, stats)
        await self.sink.publish_encoded_many(((k, v) for _, k, v in records), source=stats.source)
        self.queued += len(records)
        return filtered

    def _apply_limit(self, items: list[_T], stats: FileStats) -> list[_T]:
        if self.remaining is None:
            return items
        if len(items) >= self.remaining:
            if len(items) > self.remaining:
                # Read with the rest of their batch; said, so the counts add up.
                stats.notes.append(
                    f"{len(items) - self.remaining} events read past --limit were not published"
                )
            items = items[: self.remaining]
            self.summary.limit_reached = True
        self.remaining -= len(items)
        return items

    def _report(self, index: int, source: Source, stats: FileStats) -> None:
        if self.on_progress is None:
            return
        self.on_progress(
            Progress(
                source=source.name,
                source_index=index,
                source_count=self.source_count,
                read=self.summary.read + stats.events,
                published_or_queued=self.queued,
                bad=self.summary.bad + stats.bad,
                bytes_read=stats.bytes_read,
            )
        )

    def _close_source(self, item: SourceSummary, stats: FileStats, elapsed_s: float) -> None:
        item.lines, item.events, item.recovered, item.bad = (
            stats.lines, stats.events, stats.recovered, stats.bad,
        )  # fmt: skip
        item.truncated, item.error, item.notes = stats.truncated, stats.error, stats.notes
        item.elapsed_s = elapsed_s
        summary = self.summary
        summary.read += stats.events
        summary.recovered += stats.recovered
        summary.bad += stats.bad
        summary.filtered += item.filtered
        log.info(
            "read %s lines=%d events=%d recovered=%d bad=%d filtered=%d%s",
            item.source, item.lines, item.events, item.recovered, item.bad, item.filtered,
            " truncated" if item.truncated else "",
        )  # fmt: skip


class _WorkerPool:
    """The process pool that parses large archive files, started on first need."""

    def __init__(self, workers: int | None) -> None:
        if workers is None:
            # Leave one core to this process (Kafka, gunzip) and one to everything else
            # (the broker on a laptop): on 2 cores, measured, workers only slowed it down.
            workers = min(MAX_PARSE_WORKERS, (os.cpu_count() or 1) - 2)
        self.workers = max(workers, 0)
        self._executor: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> _WorkerPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def for_source(self, source: Source) -> Executor | None:
        """The pool for ``source``, or ``None`` to parse it in-process (small or no workers)."""
        if self.workers == 0:
            return None
        if source.path is not None:
            try:
                if source.path.stat().st_size < POOL_MIN_BYTES:
                    return None
            except OSError:
                return None  # read_source reports it
        if self._executor is None:
            # spawn, not fork: this process has threads (the progress display) and a loop.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_interrupts,
            )
            log.debug("started %d parse workers", self.workers)
        return self._executor


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the main process, which stops them after a clean flush."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# -- live mode -------------------------------------------------------------------------------


async def _run_live(options: IngestOptions, stop: asyncio.Event) -> IngestSummary:
    from ghstream.github import run_live  # the HTTP poller, only for live mode

    config = _poller_config(options)
    summary = IngestSummary(mode="live", dry_run=options.dry_run)
    started = time.monotonic()
    if options.dry_run:
        sink = DryRunSink(sys.stdout.buffer)
        summary.live = await run_live(config, sink, stop)
        summary.published = sink.published
    else:
        await _ensure_topic(options)
        publisher = EventPublisher(options.bootstrap, options.topic)
        try:
            async with publisher:
                summary.live = await run_live(config, publisher, stop)
        except DeliveryError as exc:
            summary.errors.append(str(exc))
            log.error("%s", exc)
        _confirm(summary, publisher)
    summary.interrupted = stop.is_set()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _poller_config(options: IngestOptions) -> Any:
    """The live poller's config: feeds from --repo/--org/--user/--watch-file, and the tokens."""
    from ghstream.github import PollerConfig, feeds_from_args, load_tokens

    return PollerConfig(
        api_url=options.api_url,
        feeds=feeds_from_args(options.repos, options.orgs, options.users, options.watch_file),
        tokens=load_tokens(options.token_file),
        min_interval_s=options.min_interval_s,
        once=options.once,
        json_status=options.json_status,
    )
