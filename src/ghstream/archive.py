"""Reading GH Archive files: sources, gzip, lines, and the repair of bad lines.

A *source* is a local ``.json.gz``/``.json`` file, a directory of them, an
``http(s)`` URL, or a GH Archive hour (``2015-01-01-12``) or range of hours
(``2015-01-01-0..2015-01-01-23``) fetched from https://data.gharchive.org/.
:func:`resolve_sources` turns the user's strings into :class:`Source` objects,
and :func:`read_source` streams one of them as batches of parsed events.

Memory stays bounded whatever the file size: compressed bytes are read in
chunks, inflated in bounded pieces, and split into lines incrementally.

Bad input never aborts a file. Each line is parsed once with orjson; a line
that fails goes through :mod:`ghstream.lines`, which repairs what it can
(NUL padding, objects glued on one line, lone surrogate escapes, invalid
UTF-8) and reports the rest as :class:`~ghstream.lines.BadLine`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ghstream.errors import ConfigError, SourceError
from ghstream.lines import (
    BadLine,
    EncodedBatch,
    LineParser,
    ParsedBatch,
    encode_lines,
    parse_document,
)
from ghstream.logs import redact

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

GHARCHIVE_URL = "https://data.gharchive.org"
READ_CHUNK_BYTES = 256 << 10
"""Compressed bytes read per step."""
INFLATE_PIECE_BYTES = 1 << 20
"""Most decompressed bytes produced per zlib call."""
UNPACK_STEP_BYTES = 2 << 20
"""Decompressed bytes the unpack thread hands over at once (plus at most one piece), so a
highly compressed chunk cannot balloon: a typical 256 KiB chunk of GH Archive is one step."""
MAX_LINE_BYTES = 64 << 20
"""A line longer than this is not an event; it is dead-lettered in part and skipped."""
DOCUMENT_MAX_BYTES = 256 << 20
"""Largest plain JSON document (array, API recording) read whole; NDJSON has no limit."""
POOL_BATCHES_IN_FLIGHT = 4
"""Pieces of a file being parsed in the process pool at once."""
MAX_RANGE_HOURS = 24 * 366
HTTP_RETRIES = 4
HTTP_RETRY_DELAY_S = 0.5
"""Wait before the first retry of a download; doubled for each further retry."""

_HOUR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})-(\d{1,2})$")
_ARCHIVE_SUFFIXES = (".json.gz", ".json", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Source:
    """One file to read: a local path or a URL."""

    name: str
    path: Path | None = None
    url: str | None = None


@dataclass(slots=True)
class FileStats:
    """What reading one source found. Counts are of lines unless named otherwise."""

    source: str
    lines: int = 0
    events: int = 0
    recovered: int = 0
    """Lines that failed to parse as-is but were repaired (see :mod:`ghstream.lines`)."""
    bad: int = 0
    """Lines (or pieces of lines) that could not be turned into an event."""
    blank: int = 0
    bytes_read: int = 0
    gzip_members: int = 0
    truncated: bool = False
    """The gzip stream ended mid-member; the lines read before the cut were kept."""
    error: str | None = None
    """Why reading stopped early (network, unreadable file); ``None`` when read to the end."""
    notes: list[str] = field(default_factory=list)


# -- sources ---------------------------------------------------------------------------------


def resolve_sources(specs: Sequence[str]) -> list[Source]:
    """Expand the ``--archive`` strings into files to read, in the order given.

    A file or URL named twice (also through a directory or an hour range) is read
    once, where it first appears. Raises :class:`ConfigError` for a string that is
    none of the accepted forms.
    """
    sources: list[Source] = []
    seen: set[str] = set()
    for spec in specs:
        for source in _resolve_one(spec.strip()):
            identity = source.url or str(source.path.resolve() if source.path else source.name)
            if identity in seen:
                log.warning("%s is named more than once; reading it once", source.name)
                continue
            seen.add(identity)
            sources.append(source)
    return sources


def _resolve_one(spec: str) -> list[Source]:
    if spec.startswith(("http://", "https://")):
        # The name is what every message shows: no password or signed-URL secret in it.
        return [Source(name=redact(spec), url=spec)]

    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_archive_name(p.name))
        if not files:
            raise ConfigError(
                f"--archive {spec}: the directory holds no archive file "
                f"({', '.join(_ARCHIVE_SUFFIXES)})"
            )
        return [Source(name=str(p), path=p) for p in files]
    if path.is_file():
        return [Source(name=str(path), path=path)]

    if ".." in spec:
        start, _, end = spec.partition("..")
        return [_hour_source(hour) for hour in _hour_range(spec, start, end)]
    if _HOUR.match(spec):
        return [_hour_source(_parse_hour(spec, spec))]
    raise ConfigError(
        f"--archive {spec}: not a file, a directory, an http(s) URL, a GH Archive hour "
        "like 2015-01-01-12 or a range like 2015-01-01-0..2015-01-01-23"
    )


def _is_archive_name(name: str) -> bool:
    return name.endswith(_ARCHIVE_SUFFIXES) and not name.endswith("headers.json")


def _parse_hour(spec: str, text: str) -> datetime:
    match = _HOUR.match(text.strip())
    if not match:
        raise ConfigError(f"--archive {spec}: {text!r} is not an hour like 2015-01-01-12")
    year, month, day, hour = (int(part) for part in match.groups())
    try:
        return datetime(year, month, day, hour)
    except ValueError as exc:
        raise ConfigError(f"--archive {spec}: {text!r} is not a valid hour ({exc})") from exc


def _hour_range(spec: str, start_text: str, end_text: str) -> Iterator[datetime]:
    start, end = _parse_hour(spec, start_text), _parse_hour(spec, end_text)
    if end < start:
        raise ConfigError(f"--archive {spec}: the range ends before it starts")
    hours = int((end - start) / timedelta(hours=1)) + 1
    if hours > MAX_RANGE_HOURS:
        raise ConfigError(
            f"--archive {spec}: {hours} hours is more than one run reads "
            f"({MAX_RANGE_HOURS} hours, 366 days); split the range"
        )
    for step in range(hours):
        yield start + timedelta(hours=step)


def _hour_source(hour: datetime) -> Source:
    # GH Archive names hours without zero-padding: 2015-01-01-1.json.gz
    name = f"{hour:%Y-%m-%d}-{hour.hour}"
    return Source(name=name, url=f"{GHARCHIVE_URL}/{name}.json.gz")


# -- bytes -----------------------------------------------------------------------------------


async def _local_chunks(path: Path, stats: FileStats) -> AsyncIterator[bytes]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            stats.bytes_read += len(chunk)
            yield chunk


async def _http_chunks(
    client: httpx.AsyncClient, url: str, stats: FileStats
) -> AsyncIterator[bytes]:
    """Stream ``url``; a connection lost midway resumes with a Range request."""
    import httpx  # only for URL sources: local backfills start faster without it

    shown = redact(url)
    received = 0
    attempt = 0
    while True:
        headers = {"Range": f"bytes={received}-"} if received else {}
        try:
            async with client.stream("GET", url, headers=headers) as response:
                _check_response(shown, response, resumed=bool(received))
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    stats.bytes_read += len(chunk)
                    attempt = 0
                    yield chunk
                return
        except httpx.TransportError as exc:
            attempt += 1
            if attempt > HTTP_RETRIES:
                raise SourceError(f"{shown}: {type(exc).__name__}: {redact(str(exc))}") from exc
            delay = HTTP_RETRY_DELAY_S * 2 ** (attempt - 1)
            log.warning(
                "download interrupted url=%s received=%d retry=%d/%d in %.1f s: %s",
                shown, received, attempt, HTTP_RETRIES, delay, exc,
            )  # fmt: skip
            await asyncio.sleep(delay)


def _check_response(url: str, response: httpx.Response, *, resumed: bool) -> None:
    if response.status_code == 404:
        raise SourceError(f"{url}: not found (GH Archive has no file for that hour)")
    if resumed and response.status_code != 206:
        raise SourceError(
            f"{url}: the server cannot resume a download (HTTP {response.status_code})"
        )
    if response.status_code >= 400:
        raise SourceError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")


class Inflater:
    """Gunzip a stream chunk by chunk: concatenated members, truncation, bounded output.

    ``gzip.open`` raises on a truncated file and loses what it read; this keeps
    every complete line and sets :attr:`truncated` instead.
    """

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=31)
        self._member_bytes = 0
        self.members = 0
        self.truncated = False
        self.trailing_garbage = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield the decompressed bytes of ``data``, at most :data:`INFLATE_PIECE_BYTES` each."""
        while data:
            if self.trailing_garbage:
                self.trailing_garbage += len(data)
                return
            if self._member_bytes == 0 and not data.strip(b"\x00"):
                return  # zero padding between or after members, as gzip(1) ignores
            try:
                piece = self._inflate.decompress(data, INFLATE_PIECE_BYTES)
            except zlib.error as exc:
                log.warning("gzip data is corrupt after %d members: %s", self.members, exc)
                self.trailing_garbage = len(data)
                return
            self._member_bytes += len(data) - len(self._inflate.unconsumed_tail)
            if piece:
                yield piece
            if self._inflate.eof:
                self.members += 1
                data = self._inflate.unused_data
                self._inflate = zlib.decompressobj(wbits=31)
                self._member_bytes = 0
            else:
                data = self._inflate.unconsumed_tail

    def finish(self) -> bytes:
        """The bytes left in a member the stream cut short; sets :attr:`truncated`."""
        if self._member_bytes == 0 or self.trailing_garbage:
            return b""
        self.truncated = True
        try:
            return self._inflate.flush()
        except zlib.error:
            return b""


class LineSplitter:
    """Split a byte stream into lines without holding more than one partial line."""

    def __init__(self) -> None:
        self._rest = b""
        self._skipping = False
        self.overlong: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines in ``data`` (plus what earlier calls left over)."""
        if self._rest:
            data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        if self._skipping and lines:
            lines.pop(0)  # the end of an overlong line
            self._skipping = False
        if len(self._rest) > MAX_LINE_BYTES:
            if not self._skipping:
                self.overlong.append(self._rest[:4096])
            self._rest = b""
            self._skipping = True
        return lines

    def finish(self) -> list[bytes]:
        """The last line when the stream does not end with a newline."""
        rest, self._rest = self._rest, b""
        return [rest] if rest and not self._skipping else []


# -- reading ---------------------------------------------------------------------------------


async def read_source(
    source: Source,
    stats: FileStats,
    *,
    client: httpx.AsyncClient | None = None,
    pool: Executor | None = None,
) -> AsyncGenerator[ParsedBatch | EncodedBatch, None]:
    """Stream ``source`` as batches of events and bad lines, updating ``stats`` as it goes.

    Without ``pool`` the batches are :class:`ParsedBatch` (events and their raw
    objects). With a process ``pool``, lines are parsed, normalized and encoded
    in the pool and the batches are :class:`EncodedBatch` (ready Kafka records),
    in file order. Raises :class:`SourceError` when the source cannot be opened
    or a download fails for good; whatever was yielded before that stays valid.
    """
    if source.path is not None and _is_document(source.path):
        document = _read_document(source.path, stats)
        if document is not None:
            yield document
            return
        stats.bytes_read = 0  # not one document after all: read it again as lines

    if source.url is not None:
        if client is None:
            raise SourceError(f"{source.name}: reading a URL needs an HTTP client")
        chunks = _http_chunks(client, source.url, stats)
    else:
        assert source.path is not None
        chunks = _local_chunks(source.path, stats)

    parser: _Parser = _PoolParser(stats, pool) if pool is not None else _InlineParser(stats)
    try:
        async for batch in _parse_stream(chunks, stats, parser):
            yield batch
    finally:
        parser.cancel()


class _Parser(Protocol):
    async def feed(self, lines: list[bytes]) -> list[ParsedBatch | EncodedBatch]: ...

    async def finish(self) -> list[ParsedBatch | EncodedBatch]: ...

    def cancel(self) -> None: ...


class _InlineParser:
    """Parse in this process (small files, tests, and machines with one core)."""

    def __init__(self, stats: FileStats) -> None:
        self._parser = LineParser(stats)

    async def feed(self, lines: list[bytes]) -> list[ParsedBatch | EncodedBatch]:
        return [self._parser.parse(lines)]

    async def finish(self) -> list[ParsedBatch | EncodedBatch]:
        return []

    def cancel(self) -> None:
        pass


class _PoolParser:
    """Parse, normalize and encode in a process pool; results come back in file order.

    At most :data:`POOL_BATCHES_IN_FLIGHT` pieces are out at once, so memory
    stays bounded while the pool and this process (which talks to Kafka) work
    at the same time.
    """

    def __init__(self, stats: FileStats, pool: Executor) -> None:
        self._stats = stats
        self._pool = pool
        self._pending: deque[asyncio.Future[EncodedBatch]] = deque()

    async def feed(self, lines: list[bytes]) -> list[ParsedBatch | EncodedBatch]:
        if not lines:
            return []
        first = self._stats.lines + 1
        self._stats.lines += len(lines)
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._pool, encode_lines, lines, first))
        done: list[ParsedBatch | EncodedBatch] = []
        while len(self._pending) > POOL_BATCHES_IN_FLIGHT or (
            self._pending and self._pending[0].done()
        ):
            done.append(await self._next())
        return done

    async def finish(self) -> list[ParsedBatch | EncodedBatch]:
        done: list[ParsedBatch | EncodedBatch] = []
        while self._pending:
            done.append(await self._next())
        return done

    async def _next(self) -> EncodedBatch:
        try:
            batch = await self._pending.popleft()
        except BrokenExecutor as exc:
            raise SourceError(
                f"{self._stats.source}: a parse worker process died ({exc}); "
                "rerun with --parse-workers 0 to parse in one process"
            ) from exc
        return self._account(batch)

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()

    def _account(self, batch: EncodedBatch) -> EncodedBatch:
        stats = self._stats
        stats.events += len(batch.records)
        stats.recovered += batch.recovered
        stats.bad += len(batch.bad)
        stats.blank += batch.blank
        return batch


class _Unpacker:
    """Gunzip (when the stream is gzip) and split a stream into lines, a bounded step per call.

    Calls come one at a time, in order, from a worker thread: zlib releases the
    GIL, so the next step inflates while the event loop parses this one. A step
    yields at most about :data:`UNPACK_STEP_BYTES`, however well a chunk compresses.
    """

    def __init__(self, gzip: bool) -> None:
        self.inflater = Inflater() if gzip else None
        self.splitter = LineSplitter()
        self._pieces: Iterator[bytes] = iter(())

    def feed(self, chunk: bytes | None) -> tuple[list[tuple[list[bytes], list[bytes]]], bool]:
        """``(lines, prefixes of overlong lines)`` per piece of ``chunk`` (``None``: of the
        chunk in hand), and whether the chunk holds more to unpack."""
        if chunk is not None:
            self._pieces = iter(self.inflater.feed(chunk) if self.inflater else (chunk,))
        done: list[tuple[list[bytes], list[bytes]]] = []
        size = 0
        for piece in self._pieces:
            done.append(self._split(piece))
            size += len(piece)
            if size >= UNPACK_STEP_BYTES:
                return done, True
        return done, False

    def finish(self) -> tuple[list[bytes], list[bytes]]:
        """The last lines: a cut gzip member's bytes, a final line without a newline."""
        tail = self.splitter.feed(self.inflater.finish()) if self.inflater else []
        tail += self.splitter.finish()
        return tail, self._take_overlong()

    def _split(self, piece: bytes) -> tuple[list[bytes], list[bytes]]:
        return self.splitter.feed(piece), self._take_overlong()

    def _take_overlong(self) -> list[bytes]:
        overlong, self.splitter.overlong = self.splitter.overlong, []
        return overlong


async def _parse_stream(
    chunks: AsyncIterator[bytes], stats: FileStats, parser: _Parser
) -> AsyncIterator[ParsedBatch | EncodedBatch]:
    loop = asyncio.get_running_loop()
    # Decide gzip or not on the first two bytes, however the stream is chunked.
    head = b""
    while len(head) < len(_GZIP_MAGIC):
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        head += chunk
    unpacker = _Unpacker(gzip=head.startswith(_GZIP_MAGIC))

    # Unpack in a thread, one step ahead: the next step inflates while this one is parsed.
    job = loop.run_in_executor(None, unpacker.feed, head) if head else None
    while job is not None:
        done, more = await job
        if more:
            job = loop.run_in_executor(None, unpacker.feed, None)
        else:
            following = await anext(chunks, None)
            job = loop.run_in_executor(None, unpacker.feed, following) if following else None
        for lines, overlong in done:
            for batch in await _parse_lines(parser, lines, overlong, stats):
                yield batch

    lines, overlong = unpacker.finish()
    if unpacker.inflater is not None:
        _record_gzip(unpacker.inflater, stats)
    for batch in [*await _parse_lines(parser, lines, overlong, stats), *await parser.finish()]:
        yield batch


async def _parse_lines(
    parser: _Parser, lines: list[bytes], overlong: list[bytes], stats: FileStats
) -> list[ParsedBatch | EncodedBatch]:
    batches = await parser.feed(lines)
    if overlong:
        batches.append(_overlong(overlong, stats))
    return batches


def _overlong(prefixes: list[bytes], stats: FileStats) -> ParsedBatch:
    batch = ParsedBatch()
    reason = f"line longer than {MAX_LINE_BYTES} bytes (first 4096 bytes kept)"
    for prefix in prefixes:
        stats.lines += 1
        stats.bad += 1
        batch.bad.append(BadLine(stats.lines, reason, prefix))
    return batch


def _record_gzip(inflater: Inflater, stats: FileStats) -> None:
    stats.gzip_members = inflater.members + (1 if inflater.truncated else 0)
    stats.truncated = inflater.truncated
    if inflater.truncated:
        stats.notes.append("gzip stream truncated: the lines before the cut were kept")
        log.warning(
            "%s: gzip stream is truncated; kept the lines read before the cut", stats.source
        )
    if inflater.trailing_garbage:
        if not inflater.members and not inflater.truncated:
            raise SourceError(
                f"{stats.source}: not a gzip file: {inflater.trailing_garbage} bytes after "
                "its gzip header do not inflate"
            )
        # Data past that point could not be read: like a cut stream, --strict fails on it.
        stats.truncated = True
        stats.notes.append(
            f"{inflater.trailing_garbage} bytes of non-gzip data after the last member"
        )


def _is_document(path: Path) -> bool:
    """Whether a plain (not gzip) file is one JSON document rather than NDJSON.

    A file whose first character is ``[``, or whose first line alone does not
    parse (a pretty-printed object), is read whole by :func:`parse_document`.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(READ_CHUNK_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if head.startswith(_GZIP_MAGIC):
        return False
    stripped = head.lstrip(b"\x00 \t\r\n\xef\xbb\xbf")
    if stripped.startswith(b"["):
        return True
    first_line, newline, _ = stripped.partition(b"\n")
    first_line = first_line.strip()
    if not newline:
        return False  # one long line: NDJSON
    return first_line == b"{" or (first_line.startswith(b"{") and not first_line.endswith(b"}"))


def _read_document(path: Path, stats: FileStats) -> ParsedBatch | None:
    size = path.stat().st_size
    if size > DOCUMENT_MAX_BYTES:
        raise SourceError(
            f"{path}: a {size}-byte JSON document is too large to read whole; "
            "convert it to one event per line (NDJSON)"
        )
    data = path.read_bytes()
    stats.bytes_read = len(data)
    return parse_document(data, stats)
