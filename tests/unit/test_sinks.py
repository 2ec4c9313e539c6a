"""Unit tests of the sinks' pure parts: staging rows, documents, migrations, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo.errors import BulkWriteError

from ghstream.errors import ConfigError, StoreError
from ghstream.migrate import discover
from ghstream.model import normalize
from ghstream.sinks import clean_text
from ghstream.sinks.mongo import _count_duplicates, event_document
from ghstream.sinks.postgres import _STAGING_COLUMNS, EVENT_COLUMNS, event_row, unique_by_id

RAW_PUSH = {
    "id": "2489651045",
    "type": "PushEvent",
    "created_at": "2015-01-01T12:34:56Z",
    "actor": {"id": 1, "login": "dependabot[bot]"},
    "repo": {"id": 28688495, "name": "octo/cat.js"},
    "payload": {"size": 3, "distinct_size": 2, "commits": [], "ref": "refs/heads/ma\u0000in"},
}


def test_staging_row_has_one_value_per_column_and_utc_buckets() -> None:
    row = event_row(normalize(RAW_PUSH))

    assert len(row) == len(_STAGING_COLUMNS)
    values = dict(zip(_STAGING_COLUMNS, row, strict=True))
    assert values["repo_key"] == "28688495"
    assert values["commits"] == 2
    assert values["actor_is_bot"] is True
    assert values["minute"] == datetime(2015, 1, 1, 12, 34, tzinfo=UTC)
    assert values["hour"] == datetime(2015, 1, 1, 12, tzinfo=UTC)


def test_buckets_of_an_event_with_a_local_time_offset_are_utc() -> None:
    raw = {**RAW_PUSH, "created_at": "2013-02-15T00:59:59-08:00"}

    values = dict(zip(_STAGING_COLUMNS, event_row(normalize(raw)), strict=True))

    assert values["hour"] == datetime(2013, 2, 15, 8, tzinfo=UTC)
    assert values["minute"] == datetime(2013, 2, 15, 8, 59, tzinfo=UTC)


def test_nul_is_removed_from_text_for_postgres_only() -> None:
    raw = {**RAW_PUSH, "type": "ReleaseEvent", "payload": {"release": {"tag_name": "v1\u0000"}}}
    event = normalize(raw)

    values = dict(zip(_STAGING_COLUMNS, event_row(event), strict=True))
    doc = event_document(event, raw)

    assert values["release_tag"] == "v1"
    assert doc["raw"]["payload"]["release"]["tag_name"] == "v1\u0000"
    assert clean_text("a\x00b\x00") == "ab"


def test_counts_too_large_for_postgres_become_unknown() -> None:
    raw = {**RAW_PUSH, "payload": {"size": 2**40, "distinct_size": 2**40}}

    values = dict(zip(_STAGING_COLUMNS, event_row(normalize(raw)), strict=True))

    assert values["push_size"] is None
    assert values["commits"] is None


def test_unique_by_id_keeps_first_occurrence_in_order() -> None:
    first = normalize(RAW_PUSH)
    other = normalize({**RAW_PUSH, "id": "2"})
    again = normalize({**RAW_PUSH, "payload": {}})

    assert unique_by_id([first, other, again]) == [first, other]


def test_event_columns_match_the_core_schema() -> None:
    core = next(m for m in discover() if m.version == 1).sql

    for column in EVENT_COLUMNS:
        assert f"\n    {column} " in core, column


def test_mongo_document_keeps_names_as_values() -> None:
    event = normalize(RAW_PUSH)

    doc = event_document(event, RAW_PUSH)

    assert doc["_id"] == "2489651045"
    assert doc["repo_name"] == "octo/cat.js"
    assert doc["created_at"] == datetime(2015, 1, 1, 12, 34, 56, tzinfo=UTC)
    assert doc["raw"] is RAW_PUSH
    assert all("." not in key for key in doc)


def test_migrations_are_found_in_version_order() -> None:
    migrations = discover()

    assert migrations[0].name == "001_core.sql"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)


def test_two_migrations_with_one_version_are_refused(tmp_path, monkeypatch) -> None:
    package = tmp_path / "fake_migrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "001_a.sql").write_text("SELECT 1;")
    (package / "001_b.sql").write_text("SELECT 2;")
    (package / "notes.txt").write_text("not a migration")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ConfigError, match="share version 1"):
        discover("fake_migrations")


def test_bulk_result_with_only_duplicate_keys_counts_the_inserted() -> None:
    exc = BulkWriteError({"nInserted": 3, "writeErrors": [{"code": 11000, "errmsg": "dup"}] * 2})

    assert _count_duplicates(exc, 5) == 3


def test_bulk_result_with_another_error_is_raised() -> None:
    exc = BulkWriteError(
        {"nInserted": 3, "writeErrors": [{"code": 11000}, {"code": 2, "errmsg": "bad value"}]}
    )

    with pytest.raises(StoreError, match="code 2: bad value"):
        _count_duplicates(exc, 5)
