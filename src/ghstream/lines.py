"""Turning lines (and whole JSON documents) into events, repairing what can be repaired.

The fast path parses each line once with orjson and keeps the line's own bytes
as the raw event, so nothing is serialized twice. A line orjson rejects takes
the slow path, which repairs, in this order:

* NUL bytes (padding left by a crashed writer) are removed; raw NULs are never
  valid inside JSON, so removing them cannot change an event's content;
* invalid UTF-8 is decoded with U+FFFD REPLACEMENT CHARACTER in its place;
* lone surrogate escapes such as ``"\\ud800"`` (legal JSON grammar, but not
  text; orjson refuses them) are parsed with the standard library and replaced
  by U+FFFD, in the raw event as well as in the normalized fields;
* integers beyond 64 bits become strings, NaN/Infinity become ``null`` (on the
  fast path orjson reads such an integer as a float, but the raw line is kept
  byte for byte, so the digits reach Kafka unchanged);
* two or more objects glued on one line (``}{``) are split and each kept.

A repaired line counts as *recovered*, and its raw event is re-serialized from
the repaired object. ``\\u0000`` escapes are valid JSON text and pass through
untouched. Whatever cannot be repaired becomes a :class:`BadLine` with its line
number and the reason, for the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ghstream import wire
from ghstream.model import Event, InvalidEvent, normalize

if TYPE_CHECKING:
    from ghstream.archive import FileStats

RawPayload = bytes | dict[str, Any]
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_REASON_PREVIEW = 200


@dataclass(slots=True)
class BadLine:
    """A line, or a piece of one, that is not an event."""

    line: int
    """1-based line number in the decompressed file (item number in a JSON document)."""
    reason: str
    payload: bytes


@dataclass(slots=True)
class ParsedBatch:
    """The events and bad lines found in a run of consecutive lines."""

    events: list[tuple[Event, RawPayload]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


class LineParser:
    """Parse NDJSON lines into events, counting into a :class:`~ghstream.archive.FileStats`."""

    def __init__(self, stats: FileStats) -> None:
        self.stats = stats

    def parse(self, lines: list[bytes]) -> ParsedBatch:
        """Parse consecutive lines; line numbers continue from the previous call."""
        batch = ParsedBatch()
        events = batch.events
        stats = self.stats
        first = stats.lines + 1
        stats.lines += len(lines)
        loads, decode_error = orjson.loads, orjson.JSONDecodeError

        # The hot loop: one orjson parse and one normalize per line, no other allocation.
        for offset, line in enumerate(lines):
            try:
                obj = loads(line)
            except decode_error as exc:
                self._slow(line, first + offset, str(exc), batch)
                continue
            if type(obj) is dict:
                try:
                    events.append((normalize(obj), line))
                except Exception as exc:
                    if _is_recording(obj):
                        self._recording(obj, first + offset, batch)
                    else:
                        batch.bad.append(BadLine(first + offset, _invalid(exc), line))
            else:
                self._not_an_object(obj, line, first + offset, batch)

        stats.events += len(events)
        stats.bad += len(batch.bad)
        return batch

    def _slow(self, line: bytes, number: int, first_error: str, batch: ParsedBatch) -> None:
        stripped = line.strip()
        had_nul = b"\x00" in stripped
        if had_nul:
            stripped = stripped.replace(b"\x00", b"").strip()
        if not stripped:
            self.stats.blank += 1
            return

        if had_nul:
            try:
                obj = orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                first_error = str(exc)
            else:
                if _accept(obj, stripped, number, batch):
                    self.stats.recovered += 1
                return

        objects, rest = _decode_all(stripped.decode("utf-8", errors="replace"))
        if not objects:
            batch.bad.append(BadLine(number, f"not JSON: {first_error}", line))
            return
        accepted = [_accept(_sanitize(obj), None, number, batch) for obj in objects]
        if any(accepted):
            self.stats.recovered += 1
        if rest:
            reason = (
                f"text after {len(objects)} JSON object(s) is not JSON: {rest[:_REASON_PREVIEW]!r}"
            )
            batch.bad.append(BadLine(number, reason, rest.encode("utf-8", "replace")))

    def _recording(self, obj: dict[str, Any], number: int, batch: ParsedBatch) -> None:
        """A recorded API exchange or cassette stored on one line: its pages' events."""
        for item in _document_items(obj):
            if item is not _SKIPPED:
                _accept(item, None, number, batch)

    def _not_an_object(self, obj: Any, line: bytes, number: int, batch: ParsedBatch) -> None:
        if isinstance(obj, list):  # an API page stored on one line: each element is an event
            for item in obj:
                _accept(item, None, number, batch)
            return
        reason = f"not an event: a JSON {type(obj).__name__}, not an object"
        batch.bad.append(BadLine(number, reason, line))


@dataclass(slots=True)
class EncodedBatch:
    """Consecutive lines parsed, normalized and encoded in a worker process.

    ``records`` holds ``(event type, Kafka key, envelope)`` per event, in line order.
    """

    records: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    recovered: int = 0
    blank: int = 0


def encode_lines(lines: list[bytes], first_line: int) -> EncodedBatch:
    """Parse, normalize and encode ``lines`` (the first being ``first_line``); runs in a worker.

    Returning envelopes rather than events keeps what crosses the process
    boundary to bytes, which pickle at memory speed.
    """
    from ghstream.archive import FileStats

    stats = FileStats("worker", lines=first_line - 1)
    parsed = LineParser(stats).parse(lines)
    encode, key_of = wire.encode_event, wire.event_key
    records = [(event.type, key_of(event), encode(event, raw)) for event, raw in parsed.events]
    return EncodedBatch(records, parsed.bad, stats.recovered, stats.blank)


def _is_recording(obj: dict[str, Any]) -> bool:
    return "http_interactions" in obj or ("response" in obj and "type" not in obj)


def _invalid(exc: Exception) -> str:
    if isinstance(exc, InvalidEvent):
        return f"invalid event: {exc}"
    return f"cannot normalize: {type(exc).__name__}: {exc}"


def _accept(obj: Any, raw: bytes | None, number: int, batch: ParsedBatch) -> bool:
    """Normalize ``obj`` into ``batch``; ``raw`` is its JSON bytes when they can be reused."""
    try:
        event = normalize(obj)
    except Exception as exc:
        payload = raw if raw is not None else _dump(obj)
        batch.bad.append(BadLine(number, _invalid(exc), payload))
        return False
    batch.events.append((event, raw if raw is not None else obj))
    return True


def _dump(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return repr(obj).encode("utf-8", "replace")


def _decode_all(text: str) -> tuple[list[Any], str]:
    """Every JSON value at the start of ``text``, one after another, and the text left over."""
    decoder = json.JSONDecoder()
    objects: list[Any] = []
    index, length = 0, len(text)
    while True:
        while index < length and text[index] in " \t\r\n":
            index += 1
        if index >= length:
            return objects, ""
        try:
            obj, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return objects, text[index:]
        objects.append(obj)


def _sanitize(value: Any) -> Any:
    """Make a stdlib-parsed value something orjson can write (see the module docstring)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_sanitize(key): _sanitize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_sanitize(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- whole documents -------------------------------------------------------------------------


def parse_document(data: bytes, stats: FileStats) -> ParsedBatch | None:
    """Events from one JSON document, or ``None`` when ``data`` is not one JSON value.

    Understood shapes: a single event (pretty-printed), an array of events (an
    Events API page), an array of recorded exchanges whose ``response.body`` is
    a page (``*.normalized.json``), and VCR/Betamax cassettes
    (``http_interactions[].response.body``, plain, base64 or gzip). Bodies that
    are not pages (a ``GET /user`` lookup) are skipped and noted.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            document = _sanitize(json.loads(data.decode("utf-8", errors="replace")))
        except ValueError:
            return None

    batch = ParsedBatch()
    skipped = 0
    for item in _document_items(document):
        if item is _SKIPPED:
            skipped += 1
            continue
        stats.lines += 1
        _accept(item, None, stats.lines, batch)
    stats.events += len(batch.events)
    stats.bad += len(batch.bad)
    if skipped:
        stats.notes.append(f"{skipped} recorded response bodies are not event pages; skipped")
    return batch


_SKIPPED = object()


def _document_items(document: Any) -> Iterator[Any]:
    if isinstance(document, dict) and "http_interactions" in document:
        for interaction in document.get("http_interactions") or []:
            yield from _body_items(_cassette_body(interaction))
    elif isinstance(document, dict) and _is_recording(document):
        yield from _body_items(_wrapper_body(document))
    elif isinstance(document, list):
        for item in document:
            if isinstance(item, dict) and _is_recording(item):
                yield from _document_items(item)
            else:
                yield item
    else:
        yield document


def _body_items(body: Any) -> Iterator[Any]:
    if isinstance(body, list):
        yield from body
    else:
        yield _SKIPPED


def _wrapper_body(exchange: dict[str, Any]) -> Any:
    response = exchange.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    if isinstance(body, str):
        return _json_or_none(body.encode("utf-8", "replace"))
    return body


def _cassette_body(interaction: Any) -> Any:
    response = interaction.get("response") if isinstance(interaction, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if not isinstance(body, dict):
        return None
    if body.get("base64_string"):
        data = base64.b64decode(body["base64_string"])
        if data.startswith(b"\x1f\x8b"):
            data = zlib.decompress(data, wbits=31)
        return _json_or_none(data)
    if isinstance(body.get("string"), str) and body["string"]:
        return _json_or_none(body["string"].encode("utf-8", "replace"))
    return None


def _json_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
