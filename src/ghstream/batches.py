"""Producer pieces ghstream does itself: record batches compressed off the event loop, murmur2.

aiokafka compresses a batch when its sender drains it, in the event loop, so
on a backfill one core parses *and* compresses while zstd could run beside it
(cramjam and zlib release the GIL). A :class:`RecordBatch` keeps its records
as encoded parts; :meth:`RecordBatch.seal` joins and compresses them and is
meant for a worker thread; the header (producer id, epoch and sequence, which
the idempotent producer assigns only at drain time) and its CRC are written
when aiokafka asks for the bytes.

A sealed batch is handed to ``AIOKafkaProducer.send_batch``; it offers the
part of aiokafka's ``BatchBuilder`` interface that the producer uses. The
bytes are what aiokafka's own builder writes for the same records, as the
tests check.

:func:`murmur2` is the Java client's key hash (so other producers put a key
on the same partition), the same function as ``aiokafka.partitioner.murmur2``
in fewer Python operations: 1.2 µs instead of 1.9 µs for a repository id.
"""

from __future__ import annotations

import struct
import time

from aiokafka.codec import zstd_encode
from aiokafka.record.util import calc_crc32c

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
# lastOffsetDelta, firstTimestamp, maxTimestamp, producerId, producerEpoch,
# baseSequence, recordCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_BYTES = _HEADER.size
_CRC_OFFSET = struct.calcsize(">qiib")
_ATTRIBUTES_OFFSET = struct.calcsize(">qiibI")
_AFTER_LENGTH_OFFSET = struct.calcsize(">qi")
_MAGIC = 2
_NO_LEADER_EPOCH = -1
_CODEC_ZSTD = 0x04
CODECS = (None, "zstd")
"""Compression a :class:`RecordBatch` can write."""


def _varint(value: int) -> bytes:
    """Kafka's zigzag varint of ``value``."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = tuple(_varint(n) for n in range(1 << 14))
"""Varints of offsets and short lengths, looked up instead of computed per record."""
_NULL = _varint(-1)
_ATTRIBUTES_AND_TIME_DELTA = b"\x00\x00"
"""Each record's attributes (none) and timestamp delta: every record carries the batch's time."""


def varint(value: int) -> bytes:
    return _SMALL[value] if 0 <= value < 16384 else _varint(value)


class RecordBatch:
    """One partition's batch: records appended in order, sealed once, sent once.

    ``max_bytes`` bounds the uncompressed batch, as aiokafka's ``max_batch_size``
    does; a first record larger than that is still taken, alone.
    """

    __slots__ = (
        "_attributes", "_buffer", "_closed", "_codec", "_count", "_max_bytes",
        "_parts", "_payload", "_producer", "_size", "_timestamp_ms",
    )  # fmt: skip

    def __init__(self, max_bytes: int, codec: str | None = "zstd") -> None:
        if codec not in CODECS:
            raise ValueError(f"unsupported compression {codec!r}; use one of {CODECS}")
        self._parts: list[bytes] = []
        self._size = HEADER_BYTES
        self._count = 0
        self._max_bytes = max_bytes
        self._codec = codec
        # Record timestamps are the time of publishing, not the event's: a 2015
        # timestamp would make time-based retention delete the segment at once.
        self._timestamp_ms = int(time.time() * 1000)
        self._closed = False
        self._payload: bytes | None = None
        self._attributes = 0
        self._producer = (-1, -1, -1)
        self._buffer: bytearray | None = None

    def append(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> bool:
        """Add one record; ``False`` (and the batch closes) when it does not fit."""
        if self._closed:
            return False
        head = _ATTRIBUTES_AND_TIME_DELTA + varint(self._count)
        if key is None:
            head += _NULL
            key = b""
        else:
            head += varint(len(key))
        value_length = varint(len(value))
        if headers:
            tail = bytearray(varint(len(headers)))
            for name, data in headers:
                encoded = name.encode()
                tail += varint(len(encoded)) + encoded + varint(len(data)) + data
            tail_bytes = bytes(tail)
        else:
            tail_bytes = b"\x00"
        body = len(head) + len(key) + len(value_length) + len(value) + len(tail_bytes)
        length = varint(body)
        if self._count and self._size + len(length) + body > self._max_bytes:
            self._closed = True
            return False
        self._parts += (length, head, key, value_length, value, tail_bytes)
        self._size += len(length) + body
        self._count += 1
        return True

    def seal(self) -> None:
        """Join and compress the records; safe to run in a worker thread, once."""
        self._closed = True
        records = b"".join(self._parts)
        self._parts = []
        if self._codec == "zstd":
            compressed = zstd_encode(records)
            if len(compressed) < len(records):
                self._payload, self._attributes = compressed, _CODEC_ZSTD
                return
        self._payload = records

    # -- what aiokafka's producer calls --------------------------------------------------------

    def record_count(self) -> int:
        return self._count

    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        self._producer = (producer_id, producer_epoch, base_sequence)
        self._buffer = None

    def _build(self) -> bytearray:
        if self._payload is None:
            raise RuntimeError("a record batch must be sealed before it is sent")
        if self._buffer is None:
            producer_id, producer_epoch, base_sequence = self._producer
            buffer = bytearray(HEADER_BYTES)
            _HEADER.pack_into(
                buffer, 0,
                0,  # base offset: the broker assigns offsets
                HEADER_BYTES - _AFTER_LENGTH_OFFSET + len(self._payload),
                _NO_LEADER_EPOCH, _MAGIC,
                0,  # the CRC, written below over everything after it
                self._attributes, self._count - 1,
                self._timestamp_ms, self._timestamp_ms,
                producer_id, producer_epoch, base_sequence, self._count,
            )  # fmt: skip
            buffer += self._payload
            crc = calc_crc32c(memoryview(buffer)[_ATTRIBUTES_OFFSET:])
            struct.pack_into(">I", buffer, _CRC_OFFSET, crc)
            self._buffer = buffer
        return self._buffer


_WORDS = tuple(struct.Struct(f"<{n}I") for n in range(64))
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` with Kafka's seed, as Kafka's default partitioner computes it."""
    length = len(data)
    h = 0x9747B28C ^ length
    blocks = length >> 2
    if blocks:
        words = _WORDS[blocks] if blocks < len(_WORDS) else struct.Struct(f"<{blocks}I")
        for k in words.unpack_from(data):
            k = (k * _M) & _MASK
            k = ((k ^ (k >> 24)) * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        end = length - rest
        if rest == 3:
            h ^= data[end + 2] << 16
        if rest >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)
