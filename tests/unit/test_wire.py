"""The Kafka envelope: encoding, decoding, keys, and trimming events too large for a message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ghstream import wire
from ghstream.model import Event, normalize

PUSH_2015: dict[str, Any] = {
    "id": "2489651045",
    "type": "PushEvent",
    "actor": {"id": 665991, "login": "petroav"},
    "repo": {"id": 28688495, "name": "petroav/6.828"},
    "payload": {"push_id": 536863970, "size": 1, "distinct_size": 1, "commits": [{"sha": "6b"}]},
    "public": True,
    "created_at": "2015-01-01T15:00:00Z",
}
PR_CLOSED: dict[str, Any] = {
    "id": "3",
    "type": "PullRequestEvent",
    "actor": {"id": 1, "login": "dependabot[bot]"},
    "repo": {"id": 7, "name": "o/r"},
    "payload": {
        "action": "closed",
        "number": 12,
        "pull_request": {
            "number": 12,
            "created_at": "2024-01-01T00:00:00.123456Z",
            "closed_at": "2024-01-02T00:00:00Z",
            "merged_at": "2024-01-02T00:00:00Z",
            "merged": True,
        },
    },
    "created_at": "2024-01-02T00:00:01Z",
}


def test_envelope_round_trip_from_a_dict() -> None:
    event = normalize(PR_CLOSED)
    envelope = wire.decode(wire.encode_event(event, PR_CLOSED))
    assert envelope.kind == "event"
    assert envelope.event == event
    assert envelope.raw == PR_CLOSED
    assert envelope.raw_trimmed is False


def test_raw_line_bytes_are_embedded_unchanged() -> None:
    line = orjson.dumps(PUSH_2015)
    value = wire.encode_event(normalize(PUSH_2015), line)
    assert value.endswith(b',"raw":' + line + b"}")
    assert wire.decode(value).raw == PUSH_2015


def test_event_serialization_matches_to_dict() -> None:
    """encode_event spells the fields out for speed; they must be to_dict(), in its order."""
    for raw in (PUSH_2015, PR_CLOSED):
        event = normalize(raw)
        data = orjson.loads(wire.encode_event(event, raw))
        assert list(data["event"].items()) == list(event.to_dict().items())
        assert data["v"] == 1


def test_gap_round_trip_and_stable_id() -> None:
    detected = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    first = wire.encode_gap("events", detected, 120)
    again = wire.encode_gap("events", detected, 120)
    assert first == again
    envelope = wire.decode(first)
    assert envelope.kind == "gap"
    assert envelope.event is None
    assert envelope.gap is not None
    assert envelope.gap["feed"] == "events"
    assert envelope.gap["estimated_missed"] == 120
    assert envelope.gap["detected_at"] == "2024-05-01T12:00:00+00:00"
    assert wire.decode(wire.encode_gap("events", detected, None, gap_id="x")).gap == {
        "id": "x",
        "feed": "events",
        "detected_at": "2024-05-01T12:00:00+00:00",
        "estimated_missed": None,
    }


def test_key_is_repo_id_so_a_rename_keeps_the_partition() -> None:
    before = normalize(PUSH_2015)
    renamed = normalize({**PUSH_2015, "repo": {"id": 28688495, "name": "petroav/renamed"}})
    assert wire.event_key(before) == wire.event_key(renamed) == b"28688495"


def test_key_falls_back_to_name_then_none() -> None:
    no_id = normalize({**PUSH_2015, "repo": {"id": None, "name": "a/b"}})
    assert wire.event_key(no_id) == b"a/b"
    follow = normalize({**PUSH_2015, "type": "FollowEvent", "repo": {"id": None, "name": "/"}})
    assert wire.event_key(follow) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"[1]", "not an object", id="array"),
        pytest.param(b'{"v":2,"kind":"event"}', "version 2", id="future-version"),
        pytest.param(b'{"kind":"event"}', "version None", id="no-version"),
        pytest.param(b'{"v":1,"kind":"nope"}', "unknown envelope kind", id="unknown-kind"),
        pytest.param(b'{"v":1,"kind":"event","raw":{}}', "'event' object", id="no-event"),
        pytest.param(b'{"v":1,"kind":"event","event":{}}', "'raw' object", id="no-raw"),
        pytest.param(
            b'{"v":1,"kind":"event","event":{"id":"1"},"raw":{}}',
            "not a ghstream event",
            id="event-missing-fields",
        ),
        pytest.param(
            b'{"v":1,"kind":"event","event":{"id":"1","type":"X","created_at":"nope",'
            b'"actor_login":null,"actor_id":null,"repo_name":null,"repo_id":null,"org":null,'
            b'"action":null},"raw":{}}',
            "not a ghstream event",
            id="bad-datetime",
        ),
        pytest.param(b'{"v":1,"kind":"gap","gap":{}}', "'gap' object", id="gap-without-id"),
    ],
)
def test_decode_rejects_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(wire.DecodeError, match=reason):
        wire.decode(value)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(wire.DecodeError, ValueError)


def test_trim_raw_cuts_the_largest_strings_and_keeps_structure() -> None:
    raw = {
        **PR_CLOSED,
        "payload": {**PR_CLOSED["payload"], "body": "x" * 500_000, "title": "small"},
    }
    trimmed = wire.trim_raw(raw, 10_000)
    assert len(orjson.dumps(trimmed)) <= 10_000
    assert trimmed["payload"]["body"] == "[trimmed by ghstream: 500002 bytes]"
    assert trimmed["payload"]["title"] == "small"
    assert trimmed["id"] == raw["id"]
    assert raw["payload"]["body"] == "x" * 500_000, "the input is not modified"


def test_trim_raw_cuts_containers_when_strings_are_not_enough() -> None:
    raw = {"id": "1", "type": "PushEvent", "payload": {"shas": [[i, i] for i in range(50_000)]}}
    trimmed = wire.trim_raw(raw, 2_000)
    assert len(orjson.dumps(trimmed)) <= 2_000
    assert trimmed["id"] == "1"
    assert str(trimmed["payload"]).startswith("[trimmed by ghstream") or str(
        trimmed["payload"]["shas"]
    ).startswith("[trimmed by ghstream")


def test_trimmed_envelope_is_marked_and_keeps_the_event() -> None:
    event = normalize(PR_CLOSED)
    value = wire.encode_event(event, wire.trim_raw(PR_CLOSED, 100), raw_trimmed=True)
    envelope = wire.decode(value)
    assert envelope.raw_trimmed is True
    assert envelope.event == event


def test_event_equality_survives_microseconds() -> None:
    event = normalize(PR_CLOSED)
    assert event.item_created_at == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    decoded = wire.decode(wire.encode_event(event, PR_CLOSED)).event
    assert isinstance(decoded, Event)
    assert decoded.item_created_at == event.item_created_at


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"actor_id": "abc"}, "actor_id must be int", id="string-for-int"),
        pytest.param({"repo_name": {"a": 1}}, "repo_name must be str", id="object-for-str"),
        pytest.param({"number": True}, "number must be int", id="bool-for-int"),
        pytest.param({"merged": 1}, "merged must be bool", id="int-for-bool"),
        pytest.param({"repo_id": 2**63 + 1}, "does not fit a 64-bit integer", id="huge-int"),
        pytest.param({"created_at": "2024-01-01T00:00:00"}, "no UTC offset", id="naive-time"),
        pytest.param({"item_closed_at": 5}, "ISO 8601 string", id="number-for-time"),
        pytest.param({"created_at": None}, "no 'created_at'", id="null-created-at"),
    ],
)
def test_an_envelope_with_wrongly_typed_fields_is_rejected(change: dict, reason: str) -> None:
    """Such a message passed for an event before, then crashed the PostgreSQL write and
    stopped the consumer on every restart; now it is a dead letter with the reason."""
    envelope = orjson.loads(wire.encode_event(normalize(PR_CLOSED), PR_CLOSED))
    envelope["event"].update(change)

    with pytest.raises(wire.DecodeError, match=reason):
        wire.decode(orjson.dumps(envelope))
