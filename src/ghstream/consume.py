"""The consumer: Kafka to MongoDB and PostgreSQL, effectively once.

Kafka delivers at least once; the stores make that exact. Each batch goes
through the same steps:

1. ``getmany`` reads at most ``batch_max_records`` messages.
2. Each message is decoded once (:func:`ghstream.wire.decode`); one that
   cannot be is sent to the dead-letter topic with the reason.
3. MongoDB and PostgreSQL are written concurrently. Both writes are
   idempotent (event id as key), so a batch written twice is stored once.
4. Only then are offsets committed: per partition, the last offset of the
   batch + 1, all of whose events are now stored.

A store that cannot be reached pauses the loop: the same batch is retried
with backoff and nothing is committed until both stores hold it. A crash at
any point leaves offsets at or before the stored data, so a restart rewrites
events the stores already hold, which changes nothing.

Partitions are revoked only between batches (the rebalance listener waits for
the batch in hand), so a partition never moves to another consumer with
stored but uncommitted events of a half-finished batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from rich.console import Console
from rich.live import Live
from rich.text import Text

from ghstream import config, wire
from ghstream.errors import StartupError, StoreError
from ghstream.kafka import MAX_MESSAGE_BYTES, EventPublisher, ensure_topic
from ghstream.logs import redact
from ghstream.model import Event, RawEvent
from ghstream.queries import missing_database
from ghstream.sinks import StoreUnavailable
from ghstream.sinks.mongo import MongoSink
from ghstream.sinks.postgres import PostgresSink, apply_migrations

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ConsumerOptions:
    """Everything ``run_consumer`` needs; the CLI fills it from flags and ``GHSTREAM_*``."""

    bootstrap: str = config.DEFAULT_BOOTSTRAP
    topic: str = config.DEFAULT_TOPIC
    group: str = "ghstream"
    postgres_dsn: str = config.DEFAULT_POSTGRES_DSN
    mongo_url: str = config.DEFAULT_MONGO_URL
    mongo_db: str = config.DEFAULT_MONGO_DB
    batch_max_records: int = 5000
    batch_timeout_ms: int = 500
    until_idle_s: float | None = None
    """Exit once every assigned partition has been drained for this long."""
    from_beginning: bool = False
    """Seek every partition to its earliest offset when first assigned."""
    max_partition_fetch_bytes: int = 2 * MAX_MESSAGE_BYTES
    fetch_max_bytes: int = 8 * MAX_MESSAGE_BYTES
    session_timeout_ms: int = 10_000
    pg_pool_max: int = 4
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    status: bool = True
    """Show a status line on a terminal, or log one every ``status_interval_s``."""
    status_interval_s: float = 10.0
    client_id: str = "ghstream-consume"
    idle_after: asyncio.Event | None = None
    """If given, ``until_idle_s`` only counts once this is set (``ghstream run``: ingest done)."""


@dataclass
class ConsumeSummary:
    """Counters of one consumer run; ``to_dict`` is the ``--json`` output."""

    consumed: int = 0
    stored: int = 0
    """Events new to PostgreSQL (and so counted in the aggregates)."""
    duplicates: int = 0
    """Events PostgreSQL already held: redeliveries, replays, GH Archive duplicates."""
    mongo_inserted: int = 0
    mongo_duplicates: int = 0
    dead_lettered: int = 0
    gaps: int = 0
    batches: int = 0
    store_retries: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "stop"
    """``idle`` (``until_idle_s`` reached) or ``stop`` (a signal, or the other task of ``run``)."""
    committed: dict[int, int] = field(default_factory=dict)
    """Next offset to read per partition, as committed by this run."""
    lag: dict[int, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Messages consumed per second of the run."""
        return self.consumed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the counters."""
        return {
            "consumed": self.consumed,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "mongo_inserted": self.mongo_inserted,
            "mongo_duplicates": self.mongo_duplicates,
            "dead_lettered": self.dead_lettered,
            "gaps": self.gaps,
            "batches": self.batches,
            "store_retries": self.store_retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "stopped_by": self.stopped_by,
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
            "lag": {str(p): lag for p, lag in sorted(self.lag.items())},
        }


@dataclass
class DecodedBatch:
    """One Kafka batch split by what each message turned out to be."""

    events: list[tuple[Event, RawEvent]] = field(default_factory=list)
    trimmed: set[str] = field(default_factory=set)
    """Ids of events whose raw object the producer trimmed to fit one message."""
    gaps: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[str, bytes, str]] = field(default_factory=list)
    """``(reason, original bytes, source)`` of messages that could not be decoded."""
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition, the offset after the last message of the batch."""
    size: int = 0


def decode_batch(records: dict[TopicPartition, list[Any]]) -> DecodedBatch:
    """Decode every message of a ``getmany`` result; never raises on a bad message."""
    batch = DecodedBatch()
    for tp, messages in records.items():
        for message in messages:
            batch.size += 1
            source = f"{tp.topic}[{tp.partition}]@{message.offset}"
            value = message.value
            if not value:
                batch.bad.append(("empty message", value or b"", source))
                continue
            try:
                envelope = wire.decode(value)
            except wire.DecodeError as exc:
                batch.bad.append((str(exc), value, source))
                continue
            if envelope.kind == "event" and envelope.event is not None:
                batch.events.append((envelope.event, envelope.raw or {}))
                if envelope.raw_trimmed:
                    batch.trimmed.add(envelope.event.id)
            elif envelope.kind == "gap" and envelope.gap is not None:
                batch.gaps.append(envelope.gap)
            else:
                batch.bad.append((f"unknown envelope kind {envelope.kind!r}", value, source))
        if messages:
            batch.next_offsets[tp] = messages[-1].offset + 1
    return batch


class _StopRequested(Exception):
    """A stop was requested while a store was unreachable: the batch is left uncommitted."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets partitions go only between batches, and seeks new ones for ``--from-beginning``."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # A rebalance has begun: until the new assignment arrives this member holds no
        # partitions, which must not pass for a drained topic (--until-idle).
        self.worker.rebalancing = True
        # The batch in hand is stored and committed under this lock; waiting for it
        # means the next owner starts exactly after what this consumer stored.
        async with self.worker.batch_lock:
            if revoked:
                log.info("partitions revoked: %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        worker = self.worker
        worker.assigned_once = True
        worker.rebalancing = False
        log.info("partitions assigned: %s", _names(assigned) or "none")
        if worker.options.from_beginning:
            fresh = [tp for tp in assigned if tp not in worker.rewound]
            if fresh:
                await worker.consumer.seek_to_beginning(*fresh)
                worker.rewound.update(fresh)
                log.info("rewound to the earliest offsets: %s", _names(fresh))


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure to report from a task group: a real error rather than a stop request."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    for exc in leaves:
        if not isinstance(exc, _StopRequested):
            return exc
    return leaves[0]


def _names(partitions: Any) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))


class _Worker:
    """The consume loop and its state; one per ``run_consumer`` call."""

    def __init__(
        self,
        options: ConsumerOptions,
        stop: asyncio.Event,
        consumer: AIOKafkaConsumer,
        postgres: PostgresSink,
        mongo: MongoSink,
        dead_letters: EventPublisher,
    ) -> None:
        self.options = options
        self.stop = stop
        self.consumer = consumer
        self.postgres = postgres
        self.mongo = mongo
        self.dead_letters = dead_letters
        self.summary = ConsumeSummary()
        self.batch_lock = asyncio.Lock()
        self.assigned_once = False
        self.rebalancing = False
        self.rewound: set[TopicPartition] = set()
        self.idle_since: float | None = None

    async def run(self, status: StatusReporter) -> None:
        while not self.stop.is_set():
            # getmany itself waits while a rebalance is in progress, so the lock is
            # taken only once it returns; no await separates the two.
            records = await self.consumer.getmany(
                timeout_ms=self.options.batch_timeout_ms,
                max_records=self.options.batch_max_records,
            )
            if records:
                self.idle_since = None
                async with self.batch_lock:
                    await self._handle(decode_batch(records))
            status.update(self.summary, await self._lag())
            if not records and await self._idle_long_enough():
                self.summary.stopped_by = "idle"
                return

    async def _handle(self, batch: DecodedBatch) -> None:
        try:
            await self._dead_letter(batch.bad)
            await self._store(batch)
        except _StopRequested:
            log.warning(
                "stopping with a batch of %d messages unstored; it is not committed "
                "and will be read again",
                batch.size,
            )
            return
        await self._commit(batch.next_offsets)

        summary = self.summary
        summary.consumed += batch.size
        summary.batches += 1
        summary.dead_lettered += len(batch.bad)
        summary.gaps += len(batch.gaps)

    async def _store(self, batch: DecodedBatch) -> None:
        events = [event for event, _ in batch.events]

        started = time.monotonic()
        took: dict[str, float] = {}

        async def write_postgres() -> None:
            if batch.gaps:
                await self._retrying(lambda: self.postgres.write_gaps(batch.gaps))
            result = await self._retrying(lambda: self.postgres.write_batch(events))
            self.summary.stored += result.inserted
            self.summary.duplicates += result.duplicates
            took["postgres"] = time.monotonic() - started

        async def write_mongo() -> None:
            result = await self._retrying(
                lambda: self.mongo.write_batch(batch.events, trimmed=batch.trimmed)
            )
            self.summary.mongo_inserted += result.inserted
            self.summary.mongo_duplicates += result.duplicates
            took["mongo"] = time.monotonic() - started

        # Concurrent, and each retried on its own: MongoDB is the slower store.
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(write_postgres())
                group.create_task(write_mongo())
        except BaseExceptionGroup as failed:
            raise _first_failure(failed) from None
        log.debug(
            "stored batch events=%d postgres_s=%.3f mongo_s=%.3f",
            len(events),
            took.get("postgres", 0.0),
            took.get("mongo", 0.0),
        )

    async def _retrying(self, write: Callable[[], Awaitable[T]]) -> T:
        delay = self.options.retry_initial_s
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                if self.stop.is_set():
                    raise _StopRequested from exc
                self.summary.store_retries += 1
                log.warning("%s; retrying in %.1f s, nothing committed meanwhile", exc, delay)
            await self._sleep_unless_stopped(delay)
            delay = min(delay * 2, self.options.retry_max_s)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _dead_letter(self, bad: list[tuple[str, bytes, str]]) -> None:
        if not bad:
            return
        for reason, payload, source in bad:
            log.warning("dead-lettering %s: %s", source, reason)
            await self.dead_letters.dead_letter(reason, payload, source=source)
        # The offsets of these messages are committed with the batch, so their
        # dead letters must be durable first.
        await self.dead_letters.flush()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        assigned = self.consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not mine:
            return
        delay = self.options.retry_initial_s
        while True:
            try:
                await self.consumer.commit(mine)
                break
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (we were too slow or were fenced): the next owner
                # reads these events again and the stores count them as duplicates.
                log.warning("offset commit refused (%s); the batch will be re-read", exc)
                return
            except KafkaError as exc:
                if self.stop.is_set():
                    log.warning("offset commit failed at shutdown (%s); batch will be re-read", exc)
                    return
                log.warning("offset commit failed (%s); retrying in %.1f s", exc, delay)
            await self._sleep_unless_stopped(delay)
            delay = min(delay * 2, self.options.retry_max_s)
        for tp, offset in mine.items():
            self.summary.committed[tp.partition] = offset

    async def _lag(self) -> dict[int, int]:
        lag: dict[int, int] = {}
        for tp in list(self.consumer.assignment()):
            # A rebalance may have taken the partition while position() below awaited;
            # aiokafka asserts on a partition it no longer holds.
            if tp not in self.consumer.assignment():
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(self.consumer.position(tp), timeout=1)
            except (KafkaError, TimeoutError, IllegalStateError):
                continue
            lag[tp.partition] = max(highwater - position, 0)
        self.summary.lag = lag
        return lag

    async def _drained(self) -> bool:
        if self.rebalancing:
            return False
        partitions = self.consumer.assignment()
        if not partitions:
            return True  # assigned none: more members than partitions
        try:
            ends = await self.consumer.end_offsets(list(partitions))
            for tp in partitions:
                position = await asyncio.wait_for(self.consumer.position(tp), timeout=5)
                if position < ends[tp]:
                    return False
        except (KafkaError, IllegalStateError, KeyError, TimeoutError):
            return False  # mid-rebalance: look again on the next empty poll
        return True

    async def _idle_long_enough(self) -> bool:
        options = self.options
        if options.until_idle_s is None or not self.assigned_once:
            return False
        if options.idle_after is not None and not options.idle_after.is_set():
            return False
        if not await self._drained():
            self.idle_since = None
            return False
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since >= options.until_idle_s


class StatusReporter:
    """The consumer's status: a live line on a terminal, else a log line every interval."""

    def __init__(self, *, enabled: bool, interval_s: float) -> None:
        self.enabled = enabled
        self.interval_s = interval_s
        self._live: Live | None = None
        self._last_time = time.monotonic()
        self._last_consumed = 0
        self._rate = 0.0

    def __enter__(self) -> StatusReporter:
        console = Console(stderr=True)
        if self.enabled and console.is_terminal:
            self._live = Live(console=console, refresh_per_second=4, transient=True)
            self._live.start()
            self.interval_s = 1.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, summary: ConsumeSummary, lag: dict[int, int]) -> None:
        """Show ``summary`` if the interval has passed since the last time."""
        now = time.monotonic()
        if not self.enabled or now - self._last_time < self.interval_s:
            return
        self._rate = (summary.consumed - self._last_consumed) / (now - self._last_time)
        self._last_time, self._last_consumed = now, summary.consumed
        line = format_status(summary, lag, self._rate)
        if self._live is not None:
            self._live.update(Text(line))
        else:
            log.info("status %s", line)


def format_status(summary: ConsumeSummary, lag: dict[int, int], rate: float) -> str:
    """``events_per_s=… stored=… duplicates=… dead_lettered=… lag=p0:0,p1:3``."""
    lags = ",".join(f"p{partition}:{value}" for partition, value in sorted(lag.items()))
    return (
        f"events_per_s={rate:.0f} consumed={summary.consumed} stored={summary.stored} "
        f"duplicates={summary.duplicates} dead_lettered={summary.dead_lettered} "
        f"store_retries={summary.store_retries} lag={lags or '-'}"
    )


def _startup_error(what: str, target: str, flag: str, env: str, exc: BaseException) -> StartupError:
    if isinstance(exc.__cause__, asyncpg.InvalidCatalogNameError):
        return missing_database(target, exc.__cause__)
    reason = exc.reason if isinstance(exc, StoreUnavailable) else str(exc)
    return StartupError(
        f"cannot use {what} at {redact(target)}: {redact(reason)}. "
        f"Check that it is running, or point {flag} / {env} at it."
    )


@contextlib.asynccontextmanager
async def _open_stores(options: ConsumerOptions) -> AsyncIterator[tuple[PostgresSink, MongoSink]]:
    async with AsyncExitStack() as stack:
        try:
            postgres = await stack.enter_async_context(
                PostgresSink(options.postgres_dsn, pool_max=options.pg_pool_max)
            )
            applied = await apply_migrations(postgres.pool)
        except StoreError as exc:
            raise _startup_error(
                "PostgreSQL",
                options.postgres_dsn,
                "--postgres-dsn",
                "GHSTREAM_POSTGRES_DSN",
                exc,
            ) from exc
        if applied:
            log.info("schema migrations applied: %s", ", ".join(applied))

        try:
            mongo = await stack.enter_async_context(MongoSink(options.mongo_url, options.mongo_db))
        except StoreError as exc:
            raise _startup_error(
                "MongoDB", options.mongo_url, "--mongo-url", "GHSTREAM_MONGO_URL", exc
            ) from exc
        yield postgres, mongo


@contextlib.asynccontextmanager
async def _open_kafka(
    options: ConsumerOptions,
) -> AsyncIterator[tuple[AIOKafkaConsumer, EventPublisher]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap,
        group_id=options.group,
        client_id=options.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=options.max_partition_fetch_bytes,
        fetch_max_bytes=options.fetch_max_bytes,
        session_timeout_ms=options.session_timeout_ms,
    )
    # A consumer started before any producer creates the topics the same way ingest does.
    await ensure_topic(options.bootstrap, options.topic)
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise _startup_error(
            "Kafka", options.bootstrap, "--bootstrap-servers", "GHSTREAM_KAFKA_BOOTSTRAP", exc
        ) from exc
    try:
        async with EventPublisher(
            options.bootstrap, options.topic, client_id=f"{options.client_id}-dlq"
        ) as dead_letters:
            yield consumer, dead_letters
    finally:
        await consumer.stop()


async def run_consumer(options: ConsumerOptions, stop: asyncio.Event) -> ConsumeSummary:
    """Consume ``options.topic`` into MongoDB and PostgreSQL until ``stop`` is set.

    With ``options.until_idle_s``, also returns once every assigned partition
    has had no lag for that long. The batch in hand when ``stop`` is set is
    stored and committed before returning. Raises :class:`StartupError` if a
    store or Kafka cannot be reached at start, :class:`StoreError` if a store
    rejects a write for a reason other than being unreachable.
    """
    started = time.monotonic()
    async with (
        _open_stores(options) as (postgres, mongo),
        _open_kafka(options) as (consumer, dead_letters),
    ):
        worker = _Worker(options, stop, consumer, postgres, mongo, dead_letters)
        consumer.subscribe([options.topic], listener=_Rebalance(worker))
        log.info("consuming %s as group %s", options.topic, options.group)

        with StatusReporter(enabled=options.status, interval_s=options.status_interval_s) as status:
            try:
                await worker.run(status)
            finally:
                worker.summary.elapsed_s = time.monotonic() - started

    summary = worker.summary
    log.info(
        "consumer done: consumed=%d stored=%d duplicates=%d dead_lettered=%d gaps=%d "
        "batches=%d store_retries=%d events_per_s=%.0f stopped_by=%s",
        summary.consumed,
        summary.stored,
        summary.duplicates,
        summary.dead_lettered,
        summary.gaps,
        summary.batches,
        summary.store_retries,
        summary.events_per_s,
        summary.stopped_by,
    )
    return summary
