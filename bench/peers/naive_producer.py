"""The seed design's producer, the baseline of stage 2: kafka-python, one send per event.

For each line of a GH Archive file: ``json.loads``, ``json.dumps``, one
``producer.send`` keyed by repository name; one ``flush`` at the end. No
compression (kafka-python's zstd needs another package; sending uncompressed
costs the producer less CPU, so this favours the peer), acks=all like ghstream.

    python bench/peers/naive_producer.py FILE.json.gz TOPIC BOOTSTRAP [LIMIT]

LIMIT stops after that many events: at a few thousand events per second the
seed takes minutes over a whole modern hour, and its rate is steady long before.
"""

from __future__ import annotations

import gzip
import json
import sys

from kafka import KafkaProducer


def main() -> None:
    path, topic = sys.argv[1], sys.argv[2]
    bootstrap = sys.argv[3]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=10 * 1024 * 1024
    )
    sent = 0
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            repo = (event.get("repo") or {}).get("name")
            producer.send(
                topic,
                key=repo.encode() if repo else None,
                value=json.dumps(event).encode(),
            )
            sent += 1
            if sent == limit:
                break
    producer.flush()
    producer.close()
    print(sent)


if __name__ == "__main__":
    main()
