"""The MongoDB sink: every raw event once, keyed by its event id.

Each document holds the event exactly as GitHub (or GH Archive) gave it under
``raw``, NUL characters and all, beside a few normalized top-level fields that
the indexes use::

    {"_id": "2489651045", "type": "PushEvent",
     "created_at": <BSON date, UTC>, "repo_key": "28688495",
     "repo_name": "owner/name", "actor_login": "octocat", "raw": {...}}

Repository and user names are always values, never field names: they contain
dots, which MongoDB treats as paths. Batches are unordered bulk inserts, so a
redelivered event is a duplicate-key result (code 11000), counted and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import bson
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError, WaitQueueTimeoutError

from ghstream.errors import StoreError
from ghstream.model import Event, RawEvent
from ghstream.sinks import StoreUnavailable

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
COLLECTION = "events"

# Single-field indexes: each index slows the bulk inserts (on the development
# stand-in, four single-field indexes halve the insert rate and compound ones cost
# more), and the analytics run on PostgreSQL; these serve lookups of raw events.
_INDEXES = (
    ("created_at", [("created_at", ASCENDING)]),
    ("type", [("type", ASCENDING)]),
    ("repo_key", [("repo_key", ASCENDING)]),
    ("actor_login", [("actor_login", ASCENDING)]),
)


@dataclass(frozen=True, slots=True)
class MongoWriteResult:
    """What one batch did: documents inserted, and events that were already stored."""

    inserted: int
    duplicates: int


def event_document(event: Event, raw: RawEvent, *, raw_trimmed: bool = False) -> dict[str, Any]:
    """The MongoDB document of one event: normalized index fields plus the raw event.

    ``raw_trimmed`` marks a raw event whose largest fields the producer cut to fit
    one Kafka message (see :func:`ghstream.wire.trim_raw`).
    """
    doc = {
        "_id": event.id,
        "type": event.type,
        "created_at": event.created_at,
        "repo_key": event.repo_key,
        "repo_name": event.repo_name,
        "actor_login": event.actor_login,
        "raw": raw,
    }
    if raw_trimmed:
        doc["raw_trimmed"] = True
    return doc


def _unencodable_fallback(doc: dict[str, Any]) -> dict[str, Any]:
    # BSON cannot hold every JSON value (integers past 64 bits, NUL in a key).
    # Keep such an event as its JSON text rather than lose it or stop the consumer.
    try:
        bson.encode(doc)
    except (bson.errors.InvalidDocument, OverflowError) as exc:
        log.warning(
            "event %s is not valid BSON (%s); storing its raw JSON as text", doc["_id"], exc
        )
        text = json.dumps(doc["raw"], ensure_ascii=False, separators=(",", ":"), default=str)
        return {**doc, "raw": None, "raw_json": text}
    return doc


class MongoSink:
    """Writes raw events to MongoDB, idempotently by event id.

    Create it inside the running event loop (pymongo's async client binds to
    it) and use it as an async context manager; entering pings the server and
    creates the indexes.
    """

    def __init__(
        self,
        url: str,
        db_name: str,
        *,
        collection: str = COLLECTION,
        server_selection_timeout_ms: int = 5000,
        socket_timeout_ms: int = 120_000,
        write_concurrency: int = 4,
    ) -> None:
        self.url = url
        self.write_concurrency = max(1, write_concurrency)
        self.db_name = db_name
        self.collection_name = collection
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            connectTimeoutMS=server_selection_timeout_ms,
            socketTimeoutMS=socket_timeout_ms,
            appname="ghstream",
        )
        self.collection = self._client[db_name][collection]

    async def __aenter__(self) -> MongoSink:
        try:
            await self._client.admin.command("ping")
            for name, keys in _INDEXES:
                await self.collection.create_index(keys, name=name)
        except PyMongoError as exc:
            await self._client.close()
            raise _convert(exc, "connect") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.close()

    async def write_batch(
        self,
        events: Sequence[tuple[Event, RawEvent]],
        *,
        trimmed: Collection[str] = (),
    ) -> MongoWriteResult:
        """Insert ``(event, raw)`` pairs; events already stored count as duplicates.

        ``trimmed`` holds the ids of events whose raw object was trimmed upstream.

        Raises :class:`StoreUnavailable` if MongoDB cannot be reached (retry the
        same batch: what was written becomes duplicates), :class:`StoreError`
        for any other write error.
        """
        if not events:
            return MongoWriteResult(0, 0)
        unique: dict[str, dict[str, Any]] = {}
        for event, raw in events:
            if event.id not in unique:
                unique[event.id] = event_document(event, raw, raw_trimmed=event.id in trimmed)
        docs = list(unique.values())

        # Several smaller bulk writes at once: both MongoDB and the development
        # stand-in insert faster over parallel connections (about 2x at 4 here).
        size = max(1, -(-len(docs) // self.write_concurrency))
        chunks = [docs[start : start + size] for start in range(0, len(docs), size)]
        results = await asyncio.gather(
            *(self._insert_chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # A real write error outranks "unavailable": retrying would not fix it.
            raise next((f for f in failures if not isinstance(f, StoreUnavailable)), failures[0])
        inserted = sum(r for r in results if isinstance(r, int))
        return MongoWriteResult(inserted, len(events) - inserted)

    async def _insert_chunk(self, docs: list[dict[str, Any]]) -> int:
        try:
            return await self._insert(docs)
        except (bson.errors.InvalidDocument, OverflowError):
            return await self._insert([_unencodable_fallback(doc) for doc in docs])

    async def _insert(self, docs: list[dict[str, Any]]) -> int:
        try:
            result = await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            return _count_duplicates(exc, len(docs))
        except PyMongoError as exc:
            raise _convert(exc, "batch write") from exc
        return len(result.inserted_ids)


def _count_duplicates(exc: BulkWriteError, attempted: int) -> int:
    """Documents inserted by a bulk write whose only errors are duplicate keys."""
    details = exc.details
    others = [err for err in details.get("writeErrors", []) if err.get("code") != DUPLICATE_KEY]
    if others or details.get("writeConcernErrors"):
        first = others[0] if others else details["writeConcernErrors"][0]
        raise StoreError(
            f"MongoDB batch write failed: code {first.get('code')}: {first.get('errmsg')}"
        ) from exc
    return int(details.get("nInserted", attempted - len(details.get("writeErrors", []))))


def _convert(exc: PyMongoError, doing: str) -> StoreError:
    if isinstance(exc, (ConnectionFailure, WaitQueueTimeoutError)):
        return StoreUnavailable("MongoDB", f"{doing}: {type(exc).__name__}: {exc}")
    return StoreError(f"MongoDB {doing} failed: {type(exc).__name__}: {exc}")
