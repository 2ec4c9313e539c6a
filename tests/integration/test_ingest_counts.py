"""Every recorded file in ../shared/data: ingest publishes exactly what an independent count finds.

The expected counts are computed here with the standard library only (gzip, json,
base64), not with ghstream's reader, so a reader bug cannot hide in both sides.
Ingest runs as ``--dry-run`` through :func:`ghstream.ingest.run_ingest`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ghstream import wire
from ghstream.ingest import IngestOptions, IngestSummary, run_ingest

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def archive_files() -> list[str]:
    root = SHARED / "gharchive"
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(SHARED))
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(".json.gz") or p.name.endswith("_raw.json"))
    )


def api_files() -> list[str]:
    root = SHARED / "events_api"
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(SHARED)) for p in root.rglob("*.json"))


# -- the independent side --------------------------------------------------------------------


def raw_archive_events(path: Path) -> list[dict[str, Any]]:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    return [json.loads(path.read_text(encoding="utf-8"))]


def raw_api_events(path: Path) -> list[dict[str, Any]]:
    """Events in an API recording: a page, exchanges with response.body, or a cassette."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(document, dict) and "http_interactions" in document:
        pages = [cassette_body(i["response"]["body"]) for i in document["http_interactions"]]
    elif isinstance(document, list) and document and "response" in document[0]:
        pages = [exchange["response"]["body"] for exchange in document]
    else:
        pages = [document]
    return [event for page in pages if isinstance(page, list) for event in page]


def cassette_body(body: dict[str, Any]) -> Any:
    if body.get("base64_string"):
        data = base64.b64decode(body["base64_string"])
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return json.loads(data) if data.strip() else None
    text = body.get("string") or ""
    return json.loads(text) if text.strip() else None


# -- the ingest side -------------------------------------------------------------------------


def ingest(relative: str) -> tuple[IngestSummary, list[wire.Envelope]]:
    out = io.BytesIO()
    options = IngestOptions(archive=(str(SHARED / relative),), dry_run=True)
    summary = asyncio.run(run_ingest(options, asyncio.Event(), out=out))
    envelopes = [wire.decode(line) for line in out.getvalue().splitlines()]
    return summary, envelopes


def types_of(envelopes: list[wire.Envelope]) -> Counter[str]:
    return Counter(e.event.type for e in envelopes if e.event is not None)


def ids_of(envelopes: list[wire.Envelope]) -> list[str]:
    return [e.event.id for e in envelopes if e.event is not None]


@pytest.mark.parametrize("relative", archive_files())
def test_archive_file_counts(relative: str, shared_data: Path) -> None:
    raw = raw_archive_events(shared_data / relative)
    summary, envelopes = ingest(relative)

    assert types_of(envelopes) == Counter(event["type"] for event in raw)
    assert summary.published == len(raw)
    assert (summary.bad, summary.dead_lettered, summary.recovered) == (0, 0, 0)

    # Ids are unique exactly where the raw events are distinct (GH Archive may
    # hold true duplicates; these hours hold none).
    distinct_raw = {json.dumps(event, sort_keys=True) for event in raw}
    assert len(set(ids_of(envelopes))) == len(distinct_raw)
    assert [e.raw for e in envelopes] == raw, "raw events reach the topic unchanged"


@pytest.mark.parametrize("relative", [f for f in archive_files() if f.endswith(".gz")])
def test_ids_are_stable_across_runs(relative: str, shared_data: Path) -> None:
    _, first = ingest(relative)
    _, second = ingest(relative)
    assert ids_of(first) == ids_of(second)


@pytest.mark.parametrize("relative", api_files())
def test_api_recording_counts(relative: str, shared_data: Path) -> None:
    raw = raw_api_events(shared_data / relative)
    summary, envelopes = ingest(relative)

    assert summary.published == len(raw)
    assert types_of(envelopes) == Counter(event["type"] for event in raw)
    # Recordings repeat events across requests: compare distinct ids per type.
    expected = {(event["type"], str(event["id"])) for event in raw}
    got = {(e.event.type, e.event.id) for e in envelopes if e.event is not None}
    assert got == expected
    assert summary.bad == 0


def test_the_whole_api_directory_in_one_run(shared_data: Path) -> None:
    """Every recording at once: the distinct events are the union of the files' events."""
    expected = {
        (event["type"], str(event["id"]))
        for relative in api_files()
        for event in raw_api_events(shared_data / relative)
    }
    summary, envelopes = ingest("events_api")
    got = {(e.event.type, e.event.id) for e in envelopes if e.event is not None}
    assert got == expected
    assert len(summary.sources) == len(api_files())
    assert all(s.error is None for s in summary.sources)


@pytest.mark.parametrize("which", ["hour-2013", "bad-lines"])
def test_parse_workers_give_the_same_output(
    which: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing in worker processes yields the same envelopes, counts and bad lines."""
    from ghstream import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "POOL_MIN_BYTES", 0)
    path = {
        "hour-2013": shared_data / "gharchive" / "2013-02-15-0.json.gz",
        "bad-lines": Path(__file__).parents[1] / "fixtures" / "archive" / "bad_lines.ndjson",
    }[which]
    outputs = []
    for workers in (0, 1):
        out = io.BytesIO()
        options = IngestOptions(archive=(str(path),), dry_run=True, parse_workers=workers)
        summary = asyncio.run(run_ingest(options, asyncio.Event(), out=out))
        (source,) = summary.sources
        counts = (source.lines, source.events, source.recovered, source.bad, summary.dead_lettered)
        outputs.append((out.getvalue(), counts))
    assert outputs[0] == outputs[1]
    assert outputs[0][1][1] > 0
