"""ghstream's record batches and murmur2 against aiokafka's own builder and partitioner."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from ghstream.batches import HEADER_BYTES, RecordBatch, murmur2

_CODEC_IDS = {None: 0, "zstd": 4}


def _records(count: int) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Keys null and not, values short and long (multi-byte varints), some headers."""
    rng = random.Random(7)
    records = []
    for index in range(count):
        key = None if index % 5 == 0 else str(rng.randrange(10**9)).encode()
        value = b'{"n":%d,"pad":"%s"}' % (index, b"x" * rng.choice((0, 90, 300, 20_000)))
        headers = [("ghstream-reason", b"r" * index), ("ghstream-line", b"7")] if index % 7 else []
        records.append((key, value, headers))
    return records


@pytest.mark.parametrize("codec", [None, "zstd"])
def test_a_batch_is_byte_for_byte_what_aiokafka_builds(codec: str | None) -> None:
    ours = RecordBatch(256 * 1024, codec)
    theirs = DefaultRecordBatchBuilder(2, _CODEC_IDS[codec], 0, -1, -1, 0, 256 * 1024)
    taken = 0
    for key, value, headers in _records(400):
        fits = ours.append(key, value, headers)
        assert fits == (
            theirs.append(taken, ours._timestamp_ms, key, value, headers) is not None
        ), f"the batches disagree on whether record {taken} fits"
        if not fits:
            break
        taken += 1
    assert 10 < taken < 400, "the test should fill the batch"

    ours.seal()
    ours._set_producer_state(4242, 3, 118)
    theirs.set_producer_state(4242, 3, 118)
    assert bytes(ours._build()) == bytes(theirs.build())
    assert ours.record_count() == taken


def test_a_sealed_batch_reads_back_with_a_valid_crc() -> None:
    batch = RecordBatch(1 << 20)
    records = _records(50)
    for key, value, headers in records:
        assert batch.append(key, value, headers)
    batch.seal()
    batch._set_producer_state(9, 0, 0)
    read = DefaultRecordBatch(bytearray(batch._build()))
    assert read.validate_crc()
    assert read.compression_type == 4
    assert read.producer_id == 9
    got = [(r.key, r.value, [(k, v) for k, v in r.headers]) for r in read]
    assert got == [(k, v, h) for k, v, h in records]


def test_a_record_larger_than_the_batch_goes_alone() -> None:
    batch = RecordBatch(1024)
    assert batch.append(b"k", b"v" * 5000)
    assert not batch.append(b"k", b"small")
    assert batch.closed()
    assert batch.record_count() == 1


def test_the_batch_must_be_sealed_before_its_bytes_are_asked_for() -> None:
    batch = RecordBatch(1024)
    batch.append(None, b"{}")
    with pytest.raises(RuntimeError, match="sealed"):
        batch._build()
    batch.seal()
    assert len(batch._build()) > HEADER_BYTES


def test_incompressible_records_are_sent_uncompressed() -> None:
    batch = RecordBatch(1 << 20)
    batch.append(None, random.Random(1).randbytes(4000))
    batch.seal()
    batch._set_producer_state(1, 0, 0)
    assert DefaultRecordBatch(bytearray(batch._build())).compression_type == 0


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(ValueError, match="lz4"):
        RecordBatch(1024, "lz4")


def test_murmur2_matches_kafkas_partitioner_hash() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 300)) for _ in range(3000)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", b"torvalds/linux", b"123456789", b"\xff" * 9]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key
