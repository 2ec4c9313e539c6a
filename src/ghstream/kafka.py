"""Kafka for ingest: creating the topics, and a publisher that confirms every delivery.

:func:`ensure_topic` creates ``TOPIC`` and ``TOPIC.dlq`` when they are missing
and waits until every partition has a leader.

:class:`EventPublisher` fills one record batch per partition itself
(:class:`ghstream.batches.RecordBatch`, handed to aiokafka's ``send_batch``)
instead of calling ``send()`` per event: the per-event cost drops from a
coroutine, a future and a metadata check to one ``append``, and each full batch
is compressed in a worker thread while the next one fills, not in the event
loop. It keeps aiokafka's guarantees: ``acks="all"``, idempotence (one
in-flight batch per partition, so per-key order holds through retries), and a
batch counts only when the broker confirmed it. The partition of a key is
murmur2, as in Kafka's Java client, so other producers agree on it.

An event whose envelope would exceed the broker's ``message.max.bytes`` is
not dropped: its raw object's largest fields are trimmed (``raw_trimmed`` in
the envelope, see :func:`ghstream.wire.trim_raw`) and the normalized event is
kept whole. Dead letters carry the offending bytes unchanged as their value,
with the reason, source and line in headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from ghstream import wire
from ghstream.batches import CODECS, RecordBatch, murmur2
from ghstream.config import dlq_topic
from ghstream.errors import ConfigError, GhstreamError, StartupError
from ghstream.model import Event

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
"""The brokers' ``message.max.bytes`` (set by ``make services``) and each topic's limit."""
_RECORD_OVERHEAD_BYTES = 64 * 1024
"""Room kept for the key, headers and batch framing when trimming a large event."""
COMPRESSION = "zstd"
"""Measured on the 2015-01-01-12 hour; the README's wire format section gives the numbers."""
TOPIC_READY_TIMEOUT_S = 30.0
BOOTSTRAP_HINT = "check --bootstrap-servers / GHSTREAM_KAFKA_BOOTSTRAP, or run `make services`"
_HEADER_REASON = "ghstream-reason"
_HEADER_SOURCE = "ghstream-source"
_HEADER_LINE = "ghstream-line"
_HEADER_TRUNCATED = "ghstream-truncated-from"
_KEY_CACHE_MAX = 16_384
"""Keys whose partition is remembered (murmur2 costs ~1.2 µs in Python). Busy
repositories hit it; a larger cache only grows ingest's memory with the number of
repositories in the input (200,000 keys cost ~15 MB on the modern-size hour)."""


class DeliveryError(GhstreamError):
    """Kafka did not confirm some messages; they may not be in the topic."""


# -- topics ----------------------------------------------------------------------------------


async def ensure_topic(
    bootstrap: str,
    topic: str,
    *,
    partitions: int = 6,
    replication_factor: int = 1,
    timeout_s: float = TOPIC_READY_TIMEOUT_S,
) -> None:
    """Create ``topic`` and ``topic.dlq`` when missing and wait until their leaders are known.

    Raises :class:`StartupError` when the brokers do not answer and
    :class:`ConfigError` when they refuse the partition count or replication factor.
    """
    names = [topic, dlq_topic(topic)]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ghstream-admin", request_timeout_ms=15000
    )
    try:
        async with asyncio.timeout(timeout_s):
            await _start_admin(admin, bootstrap)
            existing = set(await admin.list_topics())
            missing = [name for name in names if name not in existing]
            if missing:
                await _create(admin, missing, partitions, replication_factor)
            await _wait_for_leaders(admin, names)
    except TimeoutError as exc:
        raise StartupError(
            f"Kafka at {bootstrap} did not make topic {topic} ready within {timeout_s:.0f}s; "
            f"{BOOTSTRAP_HINT}"
        ) from exc
    finally:
        await admin.close()


async def _start_admin(admin: AIOKafkaAdminClient, bootstrap: str) -> None:
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise StartupError(f"cannot reach Kafka at {bootstrap}: {exc}; {BOOTSTRAP_HINT}") from exc


async def _create(
    admin: AIOKafkaAdminClient, names: list[str], partitions: int, replication_factor: int
) -> None:
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    response = await admin.create_topics(
        [NewTopic(name, partitions, replication_factor, topic_configs=config) for name in names]
    )
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        if error is InvalidReplicationFactorError:
            raise ConfigError(
                f"--replication-factor {replication_factor} is not possible here: {message} "
                "(a single local broker takes 1)"
            )
        if error is InvalidPartitionsError:
            raise ConfigError(f"--partitions {partitions} is not possible: {message}")
        raise StartupError(f"cannot create topic {name}: {error.__name__}: {message}")
    log.info(
        "created topics %s partitions=%d replication_factor=%d",
        ",".join(names), partitions, replication_factor,
    )  # fmt: skip


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    while True:
        described = await admin.describe_topics(names)
        if len(described) == len(names) and all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)


# -- publishing ------------------------------------------------------------------------------


@dataclass(slots=True)
class _OpenBatch:
    """A record batch being filled for one topic partition, and what it carries."""

    records: RecordBatch
    opened_s: float
    events: int = 0
    gaps: int = 0
    dead: int = 0
    sources: Counter[str] = field(default_factory=Counter)


class EventPublisher:
    """Publish envelopes to ``topic`` (dead letters to ``topic.dlq``), counting confirmed ones.

    Use as ``async with EventPublisher(bootstrap, topic) as publisher:``; leaving
    the block flushes, so everything published is confirmed or an error is raised.

    Counters: :attr:`published` events and :attr:`gaps_published` gap notices
    the brokers confirmed, :attr:`dead_lettered` confirmed dead letters,
    :attr:`failed` messages whose delivery failed, :attr:`trimmed` events whose
    raw object was trimmed to fit a message.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        compression: str | None = COMPRESSION,
        linger_ms: int = 50,
        max_batch_bytes: int = 1024 * 1024,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_pending_batches: int = 16,
        request_timeout_ms: int = 60_000,
        client_id: str = "ghstream-ingest",
    ) -> None:
        if compression not in CODECS:
            raise ConfigError(f"compression {compression!r} is not one of {CODECS}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.dlq = dlq_topic(topic)
        self.max_message_bytes = max_message_bytes
        self._compression = compression
        self._max_batch_bytes = max_batch_bytes
        self._linger_s = linger_ms / 1000
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=compression,
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            max_request_size=max_message_bytes,
            request_timeout_ms=request_timeout_ms,
        )
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[str, dict[bytes, int]] = {}
        self._sticky: dict[str, int] = {}
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        # Sealed batches wait here, in the order they were sealed, for their
        # compression and then their turn with aiokafka: one queue, one sender,
        # so a partition's batches reach the producer in the order they were filled.
        self._outbox: asyncio.Queue[tuple[tuple[str, int], _OpenBatch, asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._slots = asyncio.Semaphore(max_pending_batches)
        self._compressor: ThreadPoolExecutor | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._errors: list[BaseException] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0
        self.gaps_published = 0
        self.dead_lettered = 0
        self.failed = 0
        self.trimmed = 0
        self.published_by_source: Counter[str] = Counter()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
            else:
                flushing = asyncio.ensure_future(self.flush())
                try:
                    await asyncio.wait_for(asyncio.shield(flushing), timeout=30)
                except BaseException as error:  # a timeout or failure, or being cancelled
                    flushing.cancel()
                    with contextlib.suppress(BaseException):
                        await flushing
                    if not isinstance(error, Exception):
                        raise
        finally:
            await self.stop()

    async def start(self) -> None:
        """Connect, and learn the partitions of the topic and its dead-letter topic."""
        try:
            await self._producer.start()
            for topic in (self.topic, self.dlq):
                self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        except (KafkaError, OSError) as exc:
            await self._producer.stop()
            raise StartupError(
                f"cannot reach Kafka at {self.bootstrap}: {exc}; {BOOTSTRAP_HINT}"
            ) from exc
        # One thread: zstd releases the GIL, so it runs beside the parsing, and
        # one keeps up with it (measured in bench/RESULTS.md).
        self._compressor = ThreadPoolExecutor(1, thread_name_prefix="ghstream-compress")
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="ghstream-send"),
            asyncio.create_task(self._linger_loop(), name="ghstream-linger"),
        ]

    async def stop(self) -> None:
        """Stop the producer; call :meth:`flush` first to know every delivery's outcome.

        Batches not handed to aiokafka by then count as :attr:`failed`.
        """
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        unsent = list(self._open.values())
        self._open.clear()
        while not self._outbox.empty():
            _, batch, compressing = self._outbox.get_nowait()
            compressing.cancel()
            unsent.append(batch)
            self._outbox.task_done()
        for batch in unsent:
            self._record_failure(batch, DeliveryError("the publisher stopped before sending it"))
        await self._producer.stop()
        if self._compressor is not None:
            self._compressor.shutdown(wait=True, cancel_futures=True)
            self._compressor = None

    async def publish(
        self, event: Event, raw: bytes | dict[str, Any], *, source: str | None = None
    ) -> None:
        """Queue ``event``; it counts in :attr:`published` once the brokers confirm it."""
        await self.publish_many(((event, raw),), source=source)

    async def publish_many(
        self, events: Iterable[tuple[Event, bytes | dict[str, Any]]], *, source: str | None = None
    ) -> None:
        """:meth:`publish` for many events, in order: the backfill's loop."""
        encode, key_of = wire.encode_event, wire.event_key
        records = ((key_of(event), encode(event, raw)) for event, raw in events)
        await self.publish_encoded_many(records, source=source)

    async def publish_encoded(
        self, key: bytes | None, value: bytes, *, source: str | None = None
    ) -> None:
        """:meth:`publish` for an envelope already encoded (by a parse worker)."""
        await self.publish_encoded_many(((key, value),), source=source)

    async def publish_encoded_many(
        self, records: Iterable[tuple[bytes | None, bytes]], *, source: str | None = None
    ) -> None:
        """:meth:`publish_many` for envelopes already encoded, as ``(key, value)`` pairs.

        Free of awaits except when a full batch must wait for room.
        """
        topic, limit = self.topic, self.max_message_bytes - _RECORD_OVERHEAD_BYTES
        known, open_batches = self._key_cache(topic), self._open
        for key, value in records:
            if len(value) > limit:
                envelope = wire.decode(value)
                assert envelope.event is not None and envelope.raw is not None
                value = self._trim(envelope.event, envelope.raw, value)
            partition = known.get(key) if key is not None else None
            if partition is None:
                partition = self._partition(topic, key)
            batch = open_batches.get((topic, partition))
            if batch is None or not batch.records.append(key, value, None):
                batch = await self._append(topic, key, value, None)
            batch.events += 1
            if source is not None:
                batch.sources[source] += 1

    async def publish_gap(
        self,
        *,
        feed: str,
        detected_at: datetime,
        estimated_missed: int | None = None,
        gap_id: str | None = None,
    ) -> None:
        """Queue a notice that ``feed`` may have missed events, on the event topic."""
        value = wire.encode_gap(feed, detected_at, estimated_missed, gap_id=gap_id)
        batch = await self._append(self.topic, feed.encode(), value, None)
        batch.gaps += 1

    async def dead_letter(
        self,
        reason: str,
        payload: bytes,
        *,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        """Queue ``payload`` (unchanged) on ``topic.dlq`` with the reason in its headers."""
        headers = [(_HEADER_REASON, reason.encode("utf-8", "replace"))]
        if source is not None:
            headers.append((_HEADER_SOURCE, source.encode("utf-8", "replace")))
        if line is not None:
            headers.append((_HEADER_LINE, str(line).encode()))
        limit = self.max_message_bytes - _RECORD_OVERHEAD_BYTES
        if len(payload) > limit:
            headers.append((_HEADER_TRUNCATED, str(len(payload)).encode()))
            payload = payload[:limit]
        key = source.encode("utf-8", "replace") if source is not None else None
        batch = await self._append(self.dlq, key, payload, headers)
        batch.dead += 1

    async def flush(self) -> None:
        """Send every open batch and wait for all deliveries; raise if any failed."""
        while self._open:
            for topic_partition in list(self._open):
                await self._seal(topic_partition)
        await self._outbox.join()
        while self._pending:
            await asyncio.wait(set(self._pending))
        if self._errors:
            first = self._errors[0]
            raise DeliveryError(
                f"Kafka did not confirm {self.failed} messages: {type(first).__name__}: {first}"
            ) from first

    # -- internals -------------------------------------------------------------------------

    def _trim(self, event: Event, raw_obj: dict[str, Any], value: bytes) -> bytes:
        event_bytes = len(orjson.dumps(event))
        budget = self.max_message_bytes - _RECORD_OVERHEAD_BYTES - event_bytes - 128
        trimmed = wire.encode_event(event, wire.trim_raw(raw_obj, budget), raw_trimmed=True)
        self.trimmed += 1
        log.warning(
            "event %s (%s) is %d bytes, over the %d-byte message limit; "
            "its raw object was trimmed to %d bytes",
            event.id, event.type, len(value), self.max_message_bytes, len(trimmed),
        )  # fmt: skip
        return trimmed

    def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions[topic]
        if key is None:
            # No key, no order to keep: fill one partition's batch at a time.
            return self._sticky.setdefault(topic, partitions[0])
        cache = self._key_cache(topic)
        cached = cache.get(key)
        if cached is None:
            if len(cache) > _KEY_CACHE_MAX:
                cache.clear()
            cached = cache[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return cached

    def _key_cache(self, topic: str) -> dict[bytes, int]:
        return self._key_partition.setdefault(topic, {})

    async def _append(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> _OpenBatch:
        while True:
            topic_partition = (topic, self._partition(topic, key))
            batch = self._open.get(topic_partition)
            if batch is None:
                batch = _OpenBatch(
                    RecordBatch(self._max_batch_bytes, self._compression), time.monotonic()
                )
                self._open[topic_partition] = batch
                batch.records.append(key, value, headers)  # a batch always takes its first record
                return batch
            if batch.records.append(key, value, headers):
                return batch
            # Full: send it, then look again, as another task may have opened a batch
            # there while this one waited for room. Unkeyed records move on to the next
            # partition, whose open batch (keyed records too) they then share.
            await self._seal(topic_partition, batch)
            if key is None:
                self._next_sticky(topic)

    def _next_sticky(self, topic: str) -> int:
        partitions = self._partitions[topic]
        current = self._sticky.get(topic, partitions[0])
        self._sticky[topic] = partitions[(partitions.index(current) + 1) % len(partitions)]
        return self._sticky[topic]

    async def _seal(
        self, topic_partition: tuple[str, int], batch: _OpenBatch | None = None
    ) -> None:
        """Close a partition's open batch (``batch``, if given) and start compressing it.

        Waits while too many batches are out, with the batch still open: a batch is
        always in ``_open``, the outbox or ``_pending``, so :meth:`flush` sees it.
        """
        await self._slots.acquire()
        current = self._open.get(topic_partition)
        if current is None or (batch is not None and current is not batch):
            self._slots.release()  # sealed by another task meanwhile
            return
        del self._open[topic_partition]
        assert self._compressor is not None, "start() the publisher first"
        compressing = asyncio.get_running_loop().run_in_executor(
            self._compressor, current.records.seal
        )
        self._outbox.put_nowait((topic_partition, current, compressing))

    async def _send_loop(self) -> None:
        """Hand sealed batches to aiokafka, each once its compression is done, in seal order."""
        while True:
            (topic, partition), batch, compressing = await self._outbox.get()
            try:
                await compressing
                future = await self._producer.send_batch(batch.records, topic, partition=partition)
            except asyncio.CancelledError:
                self._slots.release()
                self._record_failure(batch, asyncio.CancelledError("publisher stopped"))
                raise
            except Exception as exc:
                self._slots.release()
                self._record_failure(batch, exc)
            else:
                self._pending.add(future)
                future.add_done_callback(lambda done, batch=batch: self._delivered(done, batch))
            finally:
                self._outbox.task_done()

    def _delivered(self, future: asyncio.Future[Any], batch: _OpenBatch) -> None:
        self._pending.discard(future)
        self._slots.release()
        if future.cancelled():
            self._record_failure(batch, asyncio.CancelledError("delivery cancelled"))
            return
        exc = future.exception()
        if exc is not None:
            self._record_failure(batch, exc)
            return
        self.published += batch.events
        self.gaps_published += batch.gaps
        self.dead_lettered += batch.dead
        self.published_by_source.update(batch.sources)

    def _record_failure(self, batch: _OpenBatch, exc: BaseException) -> None:
        count = batch.events + batch.gaps + batch.dead
        self.failed += count
        self._errors.append(exc)
        log.error("Kafka did not confirm a batch of %d messages: %r", count, exc)

    async def _linger_loop(self) -> None:
        """Send batches that waited ``linger_ms`` without filling up (a slow live feed)."""
        while True:
            await asyncio.sleep(self._linger_s)
            now = time.monotonic()
            for topic_partition, batch in list(self._open.items()):
                if now - batch.opened_s >= self._linger_s:
                    await self._seal(topic_partition, batch)
