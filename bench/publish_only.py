"""ghstream's Kafka side alone: publish envelopes encoded beforehand, with no parsing.

    python -m bench.publish_only RECORDS TOPIC BOOTSTRAP

Prints the events published and their rate once connected and loaded.
``RECORDS`` holds one ``key<TAB>envelope`` line per event (see
:func:`bench.stages.ingest.records_file`). The records go through
:class:`ghstream.kafka.EventPublisher` exactly as ``ghstream ingest`` sends them
(batches per partition, zstd in a thread, acks=all, idempotence), so stage 2
can show how much of the gap to kcat is Kafka and how much is parsing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ghstream.kafka import EventPublisher

_PIECE = 1000
"""Records handed over per call, about what one inflated chunk of an archive yields."""


async def publish(path: Path, topic: str, bootstrap: str) -> tuple[int, float]:
    """Events published, and their rate from the first send to the last confirmation."""
    records = []
    with path.open("rb") as handle:
        for line in handle:
            key, _, value = line.rstrip(b"\n").partition(b"\t")
            records.append((key or None, value))
    async with EventPublisher(bootstrap, topic, client_id="bench-publish-only") as publisher:
        started = time.perf_counter()
        for start in range(0, len(records), _PIECE):
            await publisher.publish_encoded_many(records[start : start + _PIECE])
            await asyncio.sleep(0)  # as the ingest loop does between batches
    return publisher.published, publisher.published / (time.perf_counter() - started)


def main() -> None:
    path, topic, bootstrap = sys.argv[1:4]
    published, rate = asyncio.run(publish(Path(path), topic, bootstrap))
    print(published, f"{rate:.0f}")


if __name__ == "__main__":
    main()
