from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ghstream.errors import ConfigError
from ghstream.timewindow import (
    Window,
    floor_time,
    parse_duration,
    parse_instant,
    resolve_window,
)

NOW = datetime(2026, 5, 1, 10, 34, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1h", NOW - timedelta(hours=1), id="hours"),
        pytest.param("7d", NOW - timedelta(days=7), id="days"),
        pytest.param("15m", NOW - timedelta(minutes=15), id="minutes"),
        pytest.param("90s", NOW - timedelta(seconds=90), id="seconds"),
        pytest.param("2w", NOW - timedelta(weeks=2), id="weeks"),
        pytest.param(" 3H ", NOW - timedelta(hours=3), id="case-and-space"),
        pytest.param("now", NOW, id="now"),
        pytest.param("2015-01-01", datetime(2015, 1, 1, tzinfo=UTC), id="date"),
        pytest.param("2015-01-01T12:30:00Z", datetime(2015, 1, 1, 12, 30, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2015-01-01 12:30", datetime(2015, 1, 1, 12, 30, tzinfo=UTC), id="naive-is-utc"
        ),
        pytest.param(
            "2013-02-15T00:00:00-08:00", datetime(2013, 2, 15, 8, tzinfo=UTC), id="offset"
        ),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text, now=NOW, flag="--since")

    assert parsed == expected
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "2015-13-01", ""])
def test_parse_instant_rejects_with_the_flag_name(text: str) -> None:
    with pytest.raises(ConfigError, match="--until"):
        parse_instant(text, now=NOW, flag="--until")


def test_default_window_is_the_newest_24h_of_data() -> None:
    newest = datetime(2015, 1, 1, 12, 59, 59, tzinfo=UTC)

    window = resolve_window(None, None, now=NOW, newest_event=newest)

    assert window == Window(
        start=datetime(2014, 12, 31, 13, tzinfo=UTC),
        end=datetime(2015, 1, 1, 13, tzinfo=UTC),
        defaulted=True,
    )


def test_default_window_on_an_exact_hour_includes_that_hour() -> None:
    newest = datetime(2015, 1, 1, 13, 0, 0, tzinfo=UTC)

    window = resolve_window(None, None, now=NOW, newest_event=newest)

    assert window.end == datetime(2015, 1, 1, 14, tzinfo=UTC)
    assert window.start <= newest < window.end


def test_until_without_since_takes_the_24h_before_it() -> None:
    window = resolve_window(None, "2015-01-02", now=NOW, newest_event=None)

    assert window.start == datetime(2015, 1, 1, tzinfo=UTC)
    assert window.end == datetime(2015, 1, 2, tzinfo=UTC)
    assert window.defaulted


def test_since_alone_runs_to_now() -> None:
    window = resolve_window("1h", None, now=NOW, newest_event=None)

    assert window == Window(start=NOW - timedelta(hours=1), end=NOW)
    assert not window.defaulted


def test_since_after_until_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be before"):
        resolve_window("2015-01-02", "2015-01-01", now=NOW, newest_event=None)


def test_aligned_widens_to_whole_buckets() -> None:
    window = Window(
        start=datetime(2015, 1, 1, 12, 34, 10, tzinfo=UTC),
        end=datetime(2015, 1, 1, 14, 0, 0, tzinfo=UTC),
    )

    assert window.aligned("hour") == Window(
        start=datetime(2015, 1, 1, 12, tzinfo=UTC), end=datetime(2015, 1, 1, 14, tzinfo=UTC)
    )
    assert window.aligned("minute").start == datetime(2015, 1, 1, 12, 34, tzinfo=UTC)


def test_floor_time_is_utc_whatever_the_input_offset() -> None:
    local = datetime.fromisoformat("2013-02-15T00:30:00-08:00")

    assert floor_time(local, timedelta(hours=1)) == datetime(2013, 2, 15, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)), ("1H", timedelta(hours=1))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text, flag="--every") == expected


@pytest.mark.parametrize("text", ["0m", "5", "five minutes", "-5m"])
def test_parse_duration_rejects_with_the_flag_name(text: str) -> None:
    with pytest.raises(ConfigError, match="--every"):
        parse_duration(text, flag="--every")
