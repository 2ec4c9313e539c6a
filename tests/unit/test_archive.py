"""Reading archive files: sources, gzip edge cases, bad lines and their repair, documents, HTTP."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ghstream import archive, lines, wire
from ghstream.archive import FileStats, Inflater, Source, read_source, resolve_sources
from ghstream.errors import ConfigError, SourceError
from ghstream.lines import BadLine
from ghstream.model import Event

FIXTURES = Path(__file__).parent.parent / "fixtures" / "archive"


def event_line(number: int, **extra: Any) -> bytes:
    raw = {
        "id": str(number),
        "type": "PushEvent",
        "actor": {"id": number, "login": f"user{number}"},
        "repo": {"id": 100 + number % 3, "name": f"o/r{number % 3}"},
        "payload": {"size": 1},
        "created_at": "2015-01-01T12:00:00Z",
        **extra,
    }
    return orjson.dumps(raw)


class Read:
    """Everything read_source produced for one source."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, bytes | dict[str, Any]]] = []
        self.bad: list[BadLine] = []
        self.stats = FileStats("test")

    @property
    def ids(self) -> list[str]:
        return [event.id for event, _ in self.events]

    def envelopes(self) -> list[wire.Envelope]:
        return [wire.decode(wire.encode_event(event, raw)) for event, raw in self.events]


async def read(path: Path, client: httpx.AsyncClient | None = None) -> Read:
    result = Read()
    source = Source(name=str(path), path=path)
    async for batch in read_source(source, result.stats, client=client):
        result.events.extend(batch.events)
        result.bad.extend(batch.bad)
    return result


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- bad lines -------------------------------------------------------------------------------


async def test_hand_written_bad_lines() -> None:
    """Each bad case in tests/fixtures/archive/bad_lines.ndjson is handled as documented."""
    result = await read(FIXTURES / "bad_lines.ndjson")

    assert result.ids == ["1", "2", "3", "5", "6", "7", "9"]
    assert result.stats.lines == 11
    assert result.stats.recovered == 3  # glued (line 3), surrogate (5), glued + junk (7)
    assert result.stats.blank == 1
    bad = {(b.line, b.reason.split(":")[0]) for b in result.bad}
    assert bad == {
        (2, "not JSON"),
        (4, "invalid event"),
        (7, "text after 1 JSON object(s) is not JSON"),
        (9, "invalid event"),
        (10, "not an event"),
    }
    assert result.stats.bad == 5
    assert next(b for b in result.bad if b.line == 2).payload == b"this line is not JSON at all"

    by_id = {e.event.id: e for e in result.envelopes() if e.event is not None}
    assert by_id["5"].raw is not None
    assert by_id["5"].raw["payload"]["issue"]["title"] == "lone \ufffd surrogate"
    assert by_id["6"].raw is not None
    assert by_id["6"].raw["payload"]["comment"]["body"] == "nul \x00 escape"
    assert by_id["9"].event is not None and by_id["9"].event.type == "BrandNewEvent"


async def test_the_nul_escape_passes_through_byte_for_byte() -> None:
    result = await read(FIXTURES / "bad_lines.ndjson")
    raw = next(raw for event, raw in result.events if event.id == "6")
    assert isinstance(raw, bytes)
    assert b'"nul \\u0000 escape"' in raw


async def test_nul_padding_is_stripped(tmp_path: Path) -> None:
    """A crashed writer leaves runs of NUL bytes; lines around them are kept."""
    data = event_line(1) + b"\n" + b"\x00" * 4096 + b"\n\x00\x00" + event_line(2) + b"\x00\n"
    result = await read(write(tmp_path, "nul.json", data))
    assert result.ids == ["1", "2"]
    assert result.stats.recovered == 1
    assert result.stats.blank == 1
    assert result.bad == []


async def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    line = event_line(1, note="x").replace(b'"x"', b'"caf\xe9"')
    result = await read(write(tmp_path, "latin1.json", line + b"\n"))
    assert result.ids == ["1"]
    assert result.stats.recovered == 1
    (envelope,) = result.envelopes()
    assert envelope.raw is not None and envelope.raw["note"] == "caf\ufffd"


async def test_surrogate_pairs_stay_intact(tmp_path: Path) -> None:
    """A valid escaped pair is one character; only lone halves are replaced."""
    line = event_line(1, note="x").replace(b'"x"', b'"\\ud83d\\ude00 and \\udc00"')
    result = await read(write(tmp_path, "emoji.json", line + b"\n"))
    (envelope,) = result.envelopes()
    assert envelope.raw is not None and envelope.raw["note"] == "\U0001f600 and \ufffd"


async def test_integers_beyond_64_bits_keep_their_digits(tmp_path: Path) -> None:
    """orjson reads such an integer as a float, but the raw line goes out byte for byte."""
    line = event_line(1, huge=1).replace(b'"huge":1', b'"huge":123456789012345678901234567890')
    result = await read(write(tmp_path, "bigint.json", line + b"\n"))
    ((event, raw),) = result.events
    assert raw == line
    assert b'"huge":123456789012345678901234567890' in wire.encode_event(event, raw)


async def test_integers_beyond_64_bits_on_the_repair_path_become_strings(tmp_path: Path) -> None:
    line = event_line(1, huge=1).replace(b'"huge":1', b'"huge":123456789012345678901234567890')
    glued = line + event_line(2)
    result = await read(write(tmp_path, "bigint.json", glued + b"\n"))
    envelope = result.envelopes()[0]
    assert envelope.raw is not None and envelope.raw["huge"] == "123456789012345678901234567890"


async def test_a_line_holding_an_array_of_events(tmp_path: Path) -> None:
    page = b"[" + event_line(1) + b"," + event_line(2) + b"]"
    result = await read(write(tmp_path, "page.ndjson", event_line(0) + b"\n" + page + b"\n"))
    assert result.ids == ["0", "1", "2"]


async def test_crlf_line_endings(tmp_path: Path) -> None:
    result = await read(write(tmp_path, "crlf.json", event_line(1) + b"\r\n" + event_line(2)))
    assert result.ids == ["1", "2"]
    assert [e.event.id for e in result.envelopes() if e.event] == ["1", "2"]


async def test_empty_file(tmp_path: Path) -> None:
    result = await read(write(tmp_path, "empty.json.gz", gzip.compress(b"")))
    assert result.events == []
    assert result.stats.lines == 0


async def test_overlong_line_is_dead_lettered_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(archive, "READ_CHUNK_BYTES", 300)
    data = event_line(1) + b"\n" + b'{"x":"' + b"y" * 5000 + b'"}\n' + event_line(2) + b"\n"
    result = await read(write(tmp_path, "long.json", data))
    assert result.ids == ["1", "2"]
    (bad,) = result.bad
    assert "longer than 1000 bytes" in bad.reason
    assert bad.payload.startswith(b'{"x":"yyy')


@pytest.mark.parametrize("chunk", [1, 7, 4096])
async def test_chunk_boundaries_do_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(archive, "READ_CHUNK_BYTES", chunk)
    data = (FIXTURES / "bad_lines.ndjson").read_bytes()
    result = await read(write(tmp_path, "bad.json.gz", gzip.compress(data)))
    assert result.ids == ["1", "2", "3", "5", "6", "7", "9"]
    assert len(result.bad) == 5


# -- gzip ------------------------------------------------------------------------------------


async def test_concatenated_gzip_members(tmp_path: Path) -> None:
    data = gzip.compress(event_line(1) + b"\n") + gzip.compress(event_line(2) + b"\n")
    result = await read(write(tmp_path, "two.json.gz", data))
    assert result.ids == ["1", "2"]
    assert result.stats.gzip_members == 2
    assert not result.stats.truncated


async def test_member_boundary_inside_a_line(tmp_path: Path) -> None:
    """gzip members need not end at a newline: the line continues in the next member."""
    line = event_line(1) + b"\n"
    data = gzip.compress(line[:50]) + gzip.compress(line[50:] + event_line(2) + b"\n")
    result = await read(write(tmp_path, "split.json.gz", data))
    assert result.ids == ["1", "2"]


async def test_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    body = b"".join(event_line(n) + b"\n" for n in range(200))
    compressed = gzip.compress(body)
    result = await read(write(tmp_path, "cut.json.gz", compressed[: len(compressed) * 2 // 3]))
    assert result.stats.truncated
    assert "truncated" in " ".join(result.stats.notes)
    assert 0 < len(result.events) < 200
    assert result.ids == [str(n) for n in range(len(result.events))]
    assert len(result.bad) <= 1, "at most the partial last line is bad"


async def test_zero_padding_after_the_last_member(tmp_path: Path) -> None:
    data = gzip.compress(event_line(1) + b"\n") + b"\x00" * 1024
    result = await read(write(tmp_path, "padded.json.gz", data))
    assert result.ids == ["1"]
    assert not result.stats.truncated
    assert result.stats.notes == []


async def test_garbage_after_the_last_member_is_noted(tmp_path: Path) -> None:
    data = gzip.compress(event_line(1) + b"\n") + b"this is not gzip"
    result = await read(write(tmp_path, "garbage.json.gz", data))
    assert result.ids == ["1"]
    assert any("non-gzip" in note for note in result.stats.notes)
    assert result.stats.truncated  # what follows could not be read: --strict fails on it


async def test_a_gzip_header_followed_by_junk_is_a_failed_source(tmp_path: Path) -> None:
    """Nothing inflates: the file is not skipped as empty, it fails (exit 1)."""
    data = b"\x1f\x8b" + bytes(range(256)) * 12

    with pytest.raises(SourceError, match="not a gzip file"):
        await read(write(tmp_path, "junk.json.gz", data))


def test_inflater_bounds_each_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "INFLATE_PIECE_BYTES", 1024)
    inflater = Inflater()
    pieces = list(inflater.feed(gzip.compress(b"a" * 100_000)))
    assert max(len(piece) for piece in pieces) <= 1024
    assert b"".join(pieces) == b"a" * 100_000
    assert inflater.finish() == b""
    assert not inflater.truncated


# -- whole documents (Events API pages and recordings) -----------------------------------------


async def test_pretty_printed_single_event(tmp_path: Path) -> None:
    raw = orjson.loads(event_line(1))
    path = write(tmp_path, "one.json", json.dumps(raw, indent=2).encode())
    result = await read(path)
    assert result.ids == ["1"]


async def test_api_page_array(tmp_path: Path) -> None:
    page = [orjson.loads(event_line(n)) for n in range(3)] + [{"no": "type"}]
    result = await read(write(tmp_path, "page.json", json.dumps(page, indent=1).encode()))
    assert result.ids == ["0", "1", "2"]
    (bad,) = result.bad
    assert bad.line == 4
    assert "invalid event" in bad.reason


async def test_recorded_exchanges_and_cassettes(tmp_path: Path) -> None:
    page = [orjson.loads(event_line(n)) for n in range(2)]
    exchanges = [
        {"request": {"url": "/events"}, "response": {"status": 200, "body": page}},
        {"request": {"url": "/user"}, "response": {"status": 200, "body": {"login": "x"}}},
    ]
    gzipped = base64.b64encode(gzip.compress(orjson.dumps(page[:1]))).decode()
    cassette = {
        "http_interactions": [
            {"response": {"body": {"encoding": "utf-8", "base64_string": gzipped}}},
            {"response": {"body": {"string": orjson.dumps(page[1:]).decode()}}},
        ]
    }
    normalized = await read(write(tmp_path, "x.normalized.json", json.dumps(exchanges).encode()))
    assert normalized.ids == ["0", "1"]
    assert any("not event pages" in note for note in normalized.stats.notes)
    recorded = await read(write(tmp_path, "cassette.json", json.dumps(cassette).encode()))
    assert recorded.ids == ["0", "1"]


async def test_a_file_whose_first_line_is_broken_is_still_read_as_lines(tmp_path: Path) -> None:
    data = b'{"id": "0", "type": \n' + event_line(1) + b"\n"
    result = await read(write(tmp_path, "broken.json", data))
    assert result.ids == ["1"]
    assert [b.line for b in result.bad] == [1]


# -- sources ---------------------------------------------------------------------------------


def test_resolve_hour_and_range() -> None:
    (hour,) = resolve_sources(["2015-01-01-05"])
    assert hour.url == "https://data.gharchive.org/2015-01-01-5.json.gz"
    assert hour.name == "2015-01-01-5"
    hours = resolve_sources(["2015-01-01-22..2015-01-02-1"])
    assert [s.name for s in hours] == [
        "2015-01-01-22",
        "2015-01-01-23",
        "2015-01-02-0",
        "2015-01-02-1",
    ]


def test_resolve_directory_and_files(tmp_path: Path) -> None:
    for name in ("b.json.gz", "a.json", "notes.txt", "x.http_response_headers.json"):
        write(tmp_path, name, b"")
    names = [Path(s.name).name for s in resolve_sources([str(tmp_path)])]
    assert names == ["a.json", "b.json.gz"]
    (url,) = resolve_sources(["https://example.org/f.json.gz"])
    assert url.url == "https://example.org/f.json.gz"


def test_a_source_named_twice_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "a.json.gz", b"")
    write(tmp_path, "b.json", b"")
    monkeypatch.chdir(tmp_path)
    specs = ["a.json.gz", str(tmp_path / "a.json.gz"), str(tmp_path), "2015-01-01-5"]
    sources = resolve_sources([*specs, "2015-01-01-4..2015-01-01-5"])
    assert [s.name for s in sources] == [
        "a.json.gz", str(tmp_path / "b.json"), "2015-01-01-5", "2015-01-01-4",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("nope", "not a file", id="unknown"),
        pytest.param("2015-02-30-1", "not a valid hour", id="bad-date"),
        pytest.param("2015-01-02-0..2015-01-01-0", "ends before it starts", id="reversed"),
        pytest.param("2000-01-01-0..2020-01-01-0", "more than", id="too-long"),
    ],
)
def test_resolve_rejects(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_sources([spec])
    assert "--archive" in str(caught.value)


# -- HTTP ------------------------------------------------------------------------------------


def hour_body() -> bytes:
    return gzip.compress(b"".join(event_line(n) + b"\n" for n in range(500)))


async def read_url(handler: Any) -> Read:
    result = Read()
    source = Source(name="hour", url="https://data.gharchive.org/2015-01-01-12.json.gz")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        async for batch in read_source(source, result.stats, client=client):
            result.events.extend(batch.events)
    return result


async def test_http_download() -> None:
    body = hour_body()
    result = await read_url(lambda request: httpx.Response(200, stream=_Stream(body)))
    assert len(result.events) == 500
    assert result.stats.bytes_read == len(body)


async def test_http_404_names_the_hour() -> None:
    with pytest.raises(SourceError, match="no file for that hour"):
        await read_url(lambda request: httpx.Response(404))


class _Stream(httpx.AsyncByteStream):
    """A body httpx streams as a network would (bytes content is read at construction)."""

    def __init__(self, data: bytes, *, fail: bool = False) -> None:
        self.data = data
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 65536):
            yield self.data[start : start + 65536]
        if self.fail:
            raise httpx.ReadError("connection reset")


async def test_http_resumes_with_a_range_request() -> None:
    body = hour_body()
    half = len(body) // 2
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:
            return httpx.Response(200, stream=_Stream(body[:half], fail=True))
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        return httpx.Response(206, stream=_Stream(body[start:]))

    result = await read_url(handler)
    assert ranges == [None, f"bytes={half}-"]
    assert len(result.events) == 500


async def test_http_gives_up_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "HTTP_RETRIES", 2)
    monkeypatch.setattr(archive, "HTTP_RETRY_DELAY_S", 0)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(SourceError, match="ConnectError"):
        await read_url(handler)


def test_lines_module_documents_its_replacements() -> None:
    """The replacement rules users rely on are written down where the code is."""
    doc = lines.__doc__ or ""
    for rule in ("U+FFFD", "NUL", "surrogate", "glued", "64 bits"):
        assert rule in doc


def test_hour_names_match_gharchive() -> None:
    assert archive._hour_source(datetime(2015, 1, 1, 0)).name == "2015-01-01-0"


def test_a_highly_compressed_chunk_is_unpacked_in_bounded_steps() -> None:
    from ghstream.archive import INFLATE_PIECE_BYTES, UNPACK_STEP_BYTES, _Unpacker

    line = b'{"id":"1","type":"WatchEvent"}\n'
    count = (40 << 20) // len(line)  # 40 MiB of lines in a chunk of a few hundred KiB
    chunk = gzip.compress(line * count)
    assert len(chunk) < 1 << 20
    unpacker = _Unpacker(gzip=True)
    done, more = unpacker.feed(chunk)
    steps, lines = 1, 0
    while True:
        step_bytes = sum(len(item) + 1 for lines_, _ in done for item in lines_)
        assert step_bytes <= UNPACK_STEP_BYTES + INFLATE_PIECE_BYTES
        lines += sum(len(lines_) for lines_, _ in done)
        if not more:
            break
        done, more = unpacker.feed(None)
        steps += 1
    lines += len(unpacker.finish()[0])
    assert lines == count
    assert steps >= (40 << 20) // (UNPACK_STEP_BYTES + INFLATE_PIECE_BYTES)
