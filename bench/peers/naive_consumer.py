"""The naive consumer, the baseline of stage 3: kafka-python, one INSERT per event, autocommit.

For each message of the ghstream topic: ``json.loads`` the envelope, one
``INSERT ... ON CONFLICT DO NOTHING`` into ``events`` (psycopg, autocommit) and
one ``insert_one`` of the raw event into MongoDB; Kafka offsets auto-committed.
It keeps no aggregates (ghstream does, in the same statement), which favours the
peer. The row values come from ghstream's own conversion, so only the write
pattern differs.

    python bench/peers/naive_consumer.py TOPIC GROUP BOOTSTRAP POSTGRES_DSN MONGO_URL MONGO_DB LIMIT
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import psycopg
from kafka import KafkaConsumer
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ghstream.model import Event
from ghstream.sinks.postgres import EVENT_COLUMNS, event_row

INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)


def main() -> None:
    topic, group, bootstrap, dsn, mongo_url, mongo_db, limit = sys.argv[1:8]
    consumer = KafkaConsumer(
        topic,
        group_id=group,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_partition_fetch_bytes=20 * 1024 * 1024,
    )
    pg = psycopg.connect(dsn, autocommit=True)
    mongo: Collection[dict[str, Any]] = MongoClient(mongo_url)[mongo_db]["events"]
    stored = 0
    for message in consumer:
        envelope = json.loads(message.value)
        event = Event.from_dict(envelope["event"])
        pg.execute(INSERT, event_row(event)[: len(EVENT_COLUMNS)])
        with contextlib.suppress(DuplicateKeyError):
            mongo.insert_one({"_id": event.id, "type": event.type, "raw": envelope["raw"]})
        stored += 1
        if stored >= int(limit):
            break
    consumer.close()
    pg.close()
    print(stored)


if __name__ == "__main__":
    main()
