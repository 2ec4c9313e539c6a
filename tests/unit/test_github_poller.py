"""The live poller end to end against a fake GitHub on loopback, with a clock the test drives.

Every test here talks HTTP over real sockets to :class:`fakegithub.FakeGitHub`,
which replays real recorded events as a moving feed. Time is a
:class:`fakegithub.FakeClock`: sleeping advances it at once, so an hour of
polling runs in well under a second and no assertion depends on real time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fakegithub import FakeClock, FakeFeed, FakeGitHub, MemoryPublisher, Request, load_real_events
from ghstream.errors import EXIT_AUTH, GitHubAuthError
from ghstream.github import LiveSummary, PollerConfig, load_tokens, run_live
from ghstream.poller import STALE_ETAG_PUBLIC_S

pytestmark = pytest.mark.shared_data

TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
ODD_TOKEN = "not-a-known-shape-0123456789abcdef"
"""A token the log filter's patterns do not recognise: the code must not rely on redaction."""


@pytest.fixture(scope="module")
def real_events(shared_data: Path) -> list[dict[str, Any]]:
    events = load_real_events(shared_data)
    assert len(events) > 1000
    return events


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(FakeClock()) as server:
        yield server


def config_for(github: FakeGitHub, *feeds: str, **options: Any) -> PollerConfig:
    options.setdefault("tokens", ("token-one",))
    return PollerConfig(api_url=github.api_url, feeds=feeds or ("events",), **options)


async def run_until(
    github: FakeGitHub, config: PollerConfig, publisher: MemoryPublisher, until: float
) -> LiveSummary:
    """Run the poller until the fake clock reaches ``until``."""
    stop = asyncio.Event()
    github.clock.call_at(until, stop.set)
    return await run_live(config, publisher, stop, clock=github.clock)


def assert_exactly_once(publisher: MemoryPublisher, expected: set[str]) -> None:
    ids = publisher.ids()
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == expected


def spacing(requests: list[Request]) -> list[tuple[float, int | None]]:
    """(seconds since the previous first page, X-Poll-Interval that page sent) per poll."""
    return [
        (later.at - earlier.at, earlier.poll_interval)
        for earlier, later in itertools.pairwise(requests)
    ]


# -- completeness and gaps ------------------------------------------------------------------


async def test_every_event_inside_a_window_is_published_exactly_once(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """A feed of 1 event/s polled every 60 s: nothing is lost, nothing doubled, no gap."""
    github.add_feed("events", real_events, backlog=300, per_second=1.0)
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=850)

    polls = github.first_pages("events")
    assert len(polls) == 15
    assert_exactly_once(publisher, github.ids_in_some_window("events"))
    released = set(github.feeds["events"].ids_released_by(polls[-1].at))
    assert set(publisher.ids()) == released
    assert summary.gaps == 0 and publisher.gaps == []
    assert summary.new_events == len(released) == summary.published
    assert summary.duplicates > 0  # overlapping pages were read and skipped
    assert publisher.flushes == 1


async def test_a_feed_faster_than_the_window_is_reported_as_a_gap(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """12 events/s against a 300-event window polled every 60 s: 420 events scroll past.

    Expected: one gap for the feed, an estimate close to the 420 really missed,
    a gap notice published, and every event that was in a window published once.
    """
    feed = github.add_feed("events", real_events, backlog=300, per_second=12.0)
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=100)

    in_windows = github.ids_in_some_window("events")
    assert_exactly_once(publisher, in_windows)
    second_poll = github.first_pages("events")[1]
    missed = set(feed.ids_released_by(second_poll.at)) - in_windows
    assert len(missed) == 420
    assert summary.gaps == 1 and summary.gaps_by_feed == {"events": 1}
    assert [gap["feed"] for gap in publisher.gaps] == ["events"]
    estimate = publisher.gaps[0]["estimated_missed"]
    assert summary.estimated_missed == estimate
    assert abs(estimate - len(missed)) <= len(missed) * 0.05


async def test_events_seen_in_two_feeds_are_published_once(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    github.add_feed("events", real_events[:400], backlog=200, per_second=1.0)
    github.add_feed("repos/octo/cat/events", real_events[100:500], backlog=100, per_second=1.0)
    publisher = MemoryPublisher()

    summary = await run_until(
        github, config_for(github, "events", "repos/octo/cat/events"), publisher, until=300
    )

    expected = github.ids_in_some_window("events") | github.ids_in_some_window(
        "repos/octo/cat/events"
    )
    assert_exactly_once(publisher, expected)
    assert summary.gaps == 0


async def test_private_events_are_counted_and_never_published(
    github: FakeGitHub, shared_data: Path
) -> None:
    everything = load_real_events(shared_data, public_only=False)
    private = [e for e in everything if e.get("public") is False]
    assert private
    github.add_feed("users/someone/events", everything[:300], backlog=300)
    publisher = MemoryPublisher()

    summary = await run_live(
        config_for(github, "users/someone/events", once=True),
        publisher,
        asyncio.Event(),
        clock=github.clock,
    )

    in_feed = {str(e["id"]) for e in everything[:300]}
    private_in_feed = {str(e["id"]) for e in private} & in_feed
    assert summary.private_skipped == len(private_in_feed)
    assert set(publisher.ids()) == in_feed - private_in_feed


# -- pacing ---------------------------------------------------------------------------------


async def test_no_feed_is_polled_sooner_than_its_poll_interval(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """Three feeds; one raises X-Poll-Interval to 120 s midway, one sends none (60 s default)."""
    busy = github.add_feed("events", real_events[:600], backlog=100, per_second=0.5)
    github.add_feed("repos/octo/cat/events", real_events[600:900], backlog=100, per_second=0.2)
    github.add_feed(
        "orgs/octo/events", real_events[900:], backlog=50, per_second=0.1, poll_interval=None
    )
    github.clock.call_at(400, lambda: setattr(busy, "poll_interval", 120))
    feeds = ("events", "repos/octo/cat/events", "orgs/octo/events")
    publisher = MemoryPublisher()

    await run_until(github, config_for(github, *feeds), publisher, until=1200)

    for path in feeds:
        gaps = spacing(github.first_pages(path))
        assert len(gaps) >= 8
        for waited, interval in gaps:
            assert waited >= (interval or 60) - 1e-9  # float rounding of the fake clock
    assert max(interval or 0 for _, interval in spacing(github.first_pages("events"))) == 120


async def test_an_explicit_min_interval_lowers_the_poll_interval(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    github.add_feed("events", real_events, backlog=100, per_second=0.5)
    publisher = MemoryPublisher()

    await run_until(github, config_for(github, min_interval_s=15.0), publisher, until=300)

    waits = [waited for waited, _ in spacing(github.first_pages("events"))]
    assert len(waits) >= 15
    assert all(waited >= 15 - 1e-9 for waited in waits)
    assert min(waits) < 60


async def test_the_rate_limit_budget_is_never_exceeded(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """Without a token (60 requests an hour), three moving feeds would need ~360 an hour.

    Expected over 2.5 hours: no request over budget, the budget used rather
    than starved, and the gaps this causes reported.
    """
    for offset, path in enumerate(("events", "repos/octo/cat/events", "orgs/octo/events")):
        shifted = real_events[offset * 400 :] + real_events[: offset * 400]
        github.add_feed(path, shifted, backlog=150, per_second=1.0, laps=8)
    publisher = MemoryPublisher()

    summary = await run_until(
        github,
        config_for(github, "events", "repos/octo/cat/events", "orgs/octo/events", tokens=()),
        publisher,
        until=9000,
    )

    assert github.violations == []
    spent = [r for r in github.requests if r.status not in (304, -1)]
    first_hour = [r for r in spent if r.at < 3600]
    assert 50 <= len(first_hour) <= 60
    assert summary.rate_remaining is not None
    assert summary.gaps > 0


async def test_tokens_are_used_in_turn(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    github.add_feed("events", real_events, backlog=300, per_second=1.0)
    publisher = MemoryPublisher()

    await run_until(
        github, config_for(github, tokens=("token-one", "token-two")), publisher, until=300
    )

    used = [r.token for r in github.requests]
    assert set(used) == {"token-one", "token-two"}
    assert all(a != b for a, b in itertools.pairwise(used))


# -- conditional requests -------------------------------------------------------------------


@pytest.mark.parametrize("weak", [True, False], ids=["weak-etag", "strong-etag"])
async def test_an_unchanged_feed_is_asked_with_its_exact_etag_and_answers_304(
    github: FakeGitHub, real_events: list[dict[str, Any]], weak: bool
) -> None:
    feed = github.add_feed("repos/octo/cat/events", real_events[:40], backlog=40, weak_etag=weak)
    publisher = MemoryPublisher()

    summary = await run_until(
        github, config_for(github, "repos/octo/cat/events"), publisher, until=250
    )

    first, *later = github.first_pages("repos/octo/cat/events")
    etag = feed.etag(feed.window(first.at, github.clock.wall_start))
    assert etag.startswith('W/"') if weak else etag.startswith('"')
    assert first.if_none_match is None and first.status == 200
    assert len(later) == 4
    assert all(r.if_none_match == etag and r.status == 304 for r in later)
    assert summary.not_modified == 4
    assert len(publisher.ids()) == 40


async def test_a_stale_etag_is_dropped_and_the_events_behind_it_are_fetched(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """GitHub keeps answering 304 to an old ETag although new events arrived.

    Expected: after STALE_ETAG_PUBLIC_S of 304s the poller asks once without
    If-None-Match, and the events it could not see are published.
    """
    feed = github.add_feed("events", real_events[:120], backlog=100, per_second=1 / 30, start=120)
    github.clock.call_at(30, lambda: feed.add_faults("stale_etag"))
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=900)

    polls = github.first_pages("events")
    unconditional = [r for r in polls[1:] if r.if_none_match is None]
    assert len(unconditional) == 1
    assert unconditional[0].at >= 60 + STALE_ETAG_PUBLIC_S
    assert summary.etags_dropped == 1
    hidden = set(feed.ids_released_by(unconditional[0].at - 1)) - set(feed.ids_released_by(60))
    assert len(hidden) >= 15
    assert hidden <= set(publisher.ids())
    assert_exactly_once(publisher, github.ids_in_some_window("events"))


# -- faults ---------------------------------------------------------------------------------


async def test_server_errors_dropped_connections_and_bad_json_are_retried(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    feed = github.add_feed("events", real_events, backlog=300, per_second=1.0)
    feed.add_faults("500", "drop", "invalid_json")
    github.clock.call_at(200, lambda: feed.add_faults("502", "500", "500", "500"))
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=600)

    assert summary.errors == 6 and summary.invalid_pages == 1
    assert_exactly_once(publisher, github.ids_in_some_window("events"))
    assert github.first_pages("events")[-1].at >= 540  # polling resumed after the failed poll
    assert summary.gaps == 0


async def test_a_poll_cut_short_is_read_again_in_full(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """1. At t=60 the window holds 150 new events. 2. Its page 2 fails four times.
    3. The feed does not move until the next poll, so page 1 is unchanged.

    Expected: the next poll does not stop at page 1 (read only by the failed
    poll) but reads page 2 and publishes its 50 new events.
    """
    feed = github.add_feed("events", real_events[:250], backlog=100, per_second=5.0)
    github.on_request = fail_the_next_page(feed, after=60.0, failures=4)
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=400)

    assert summary.errors == 4
    assert_exactly_once(publisher, {str(e["id"]) for e in real_events[:250]})
    assert summary.gaps == 0


def fail_the_next_page(feed: FakeFeed, *, after: float, failures: int) -> Callable[[Request], None]:
    """A hook that makes the page after the first page-1 request at ``after`` fail."""
    armed = [True]

    def hook(request: Request) -> None:
        if armed[0] and request.page == 1 and request.at >= after:
            armed[0] = False
            feed.add_faults(*["500"] * failures)

    return hook


async def test_a_secondary_rate_limit_waits_for_retry_after(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    feed = github.add_feed("events", real_events, backlog=300, per_second=1.0)
    github.clock.call_at(100, lambda: feed.add_faults("secondary_403"))
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=600)

    limited = next(r for r in github.requests if r.fault == "secondary_403")
    after = github.requests[github.requests.index(limited) + 1]
    assert after.at >= limited.at + 120
    assert github.violations == []
    assert summary.rate_limited == 1
    assert_exactly_once(publisher, github.ids_in_some_window("events"))


async def test_a_429_with_no_budget_left_waits_until_the_reset(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    feed = github.add_feed("events", real_events, backlog=300, per_second=0.2)
    github.clock.call_at(100, lambda: feed.add_faults("429"))
    publisher = MemoryPublisher()

    summary = await run_until(github, config_for(github), publisher, until=4000)

    limited = next(r for r in github.requests if r.fault == "429")
    after = github.requests[github.requests.index(limited) + 1]
    assert github.requests[0].at == 0  # the token's hour, and its reset, start here
    assert after.at >= 3600
    assert github.violations == []
    assert summary.rate_limited == 1
    assert github.first_pages("events")[-1].at > 3900  # polling resumed after the reset


async def test_an_unknown_feed_is_reported_and_the_others_go_on(
    github: FakeGitHub, real_events: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    github.add_feed("events", real_events, backlog=300, per_second=1.0)
    publisher = MemoryPublisher()

    summary = await run_until(
        github, config_for(github, "repos/no/such/events", "events"), publisher, until=400
    )

    missing = [r for r in github.requests if r.path == "repos/no/such/events"]
    assert [r.status for r in missing] == [404] * len(missing)
    assert 2 <= len(missing) <= 4  # retried later, backing off, not every 60 s
    assert summary.errors == len(missing)
    assert "repos/no/such/events: GitHub answered 404 Not Found" in caplog.text
    assert_exactly_once(publisher, github.ids_in_some_window("events"))


async def test_the_end_of_the_window_422_is_not_an_error(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    github.add_feed("events", real_events, backlog=400, per_second=0.5, link_past_window=True)
    publisher = MemoryPublisher()

    summary = await run_live(
        config_for(github, once=True), publisher, asyncio.Event(), clock=github.clock
    )

    assert [r.status for r in github.requests] == [200, 200, 200, 422]
    assert summary.errors == 0
    assert_exactly_once(publisher, github.ids_in_some_window("events"))
    assert len(publisher.ids()) == 300


async def test_a_401_stops_with_an_auth_error_that_names_the_fix(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    feed = github.add_feed("events", real_events, backlog=300, per_second=1.0)
    github.clock.call_at(100, lambda: feed.add_faults("401"))
    publisher = MemoryPublisher()

    with pytest.raises(GitHubAuthError) as raised:
        await run_until(github, config_for(github, tokens=(ODD_TOKEN,)), publisher, until=600)

    message = str(raised.value)
    assert raised.value.exit_code == EXIT_AUTH
    assert "GITHUB_TOKEN" in message and "--token-file" in message and "401" in message
    assert ODD_TOKEN not in message
    assert publisher.flushes == 1  # what was published before the 401 is flushed


async def test_no_token_appears_in_logs_messages_or_status(
    github: FakeGitHub,
    real_events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Tokens from GITHUB_TOKEN, through retries, limits, a 401 and every DEBUG log line."""
    monkeypatch.setenv("GITHUB_TOKEN", f"{TOKEN}, {ODD_TOKEN}")
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "ghstream"):
        caplog.set_level(logging.DEBUG, logger=name)
    feed = github.add_feed("events", real_events, backlog=300, per_second=1.0)
    feed.add_faults("500", "secondary_403", "invalid_json")
    github.clock.call_at(400, lambda: feed.add_faults("401"))
    config = config_for(github, tokens=load_tokens(None), json_status=True, status_every_s=60.0)

    with pytest.raises(GitHubAuthError) as raised:
        await run_until(github, config, publisher=MemoryPublisher(), until=900)

    seen = [r.token for r in github.requests]
    assert TOKEN in seen and ODD_TOKEN in seen
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    assert any(record.name.startswith("httpx") for record in caplog.records)
    status = capsys.readouterr().err
    assert '"requests"' in status
    texts = [caplog.text, status, str(raised.value), repr(raised.value), repr(config)]
    texts += [str(record.args) for record in caplog.records]
    for text in texts:
        assert TOKEN not in text and ODD_TOKEN not in text


# -- lifecycle and status -------------------------------------------------------------------


async def test_once_polls_every_feed_one_time_and_returns(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    github.add_feed("events", real_events[:300], backlog=300)
    github.add_feed("repos/octo/cat/events", real_events[300:350], backlog=50)
    publisher = MemoryPublisher()

    summary = await run_live(
        config_for(github, "events", "repos/octo/cat/events", once=True),
        publisher,
        asyncio.Event(),
        clock=github.clock,
    )

    assert len(github.first_pages("events")) == 1
    assert len(github.first_pages("repos/octo/cat/events")) == 1
    assert len(publisher.ids()) == 350 == summary.published
    assert publisher.flushes == 1


async def test_a_stop_mid_window_publishes_the_page_in_hand_and_flushes(
    github: FakeGitHub, real_events: list[dict[str, Any]]
) -> None:
    """1. The poller fetches page 1 of a 300-event window. 2. Stop is set while it is served.

    Expected: page 1's 100 events are published and flushed, page 2 is never asked for.
    """
    github.add_feed("events", real_events, backlog=300)
    stop = asyncio.Event()
    github.on_request = stop_after_first(stop)
    publisher = MemoryPublisher()

    summary = await run_live(config_for(github), publisher, stop, clock=github.clock)

    assert len(github.requests) == 1
    assert set(publisher.ids()) == set(github.requests[0].served_ids)
    assert summary.published == 100
    assert publisher.flushes == 1


def stop_after_first(stop: asyncio.Event) -> Callable[[Request], None]:
    def hook(request: Request) -> None:
        stop.set()

    return hook


async def test_status_lines_report_the_counters(
    github: FakeGitHub,
    real_events: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    github.add_feed("events", real_events, backlog=300, per_second=12.0)
    caplog.set_level(logging.INFO, logger="ghstream")

    await run_until(github, config_for(github, status_every_s=30.0), MemoryPublisher(), 100)
    await run_until(
        github, config_for(github, json_status=True), MemoryPublisher(), github.clock.now + 100
    )

    lines = [r.getMessage() for r in caplog.records if r.name == "ghstream.poller"]
    status = [line for line in lines if line.startswith(("status ", "final "))]
    assert len(status) >= 3
    assert "gaps=1 (events:1)" in status[-1] and "published=" in status[-1]
    # Other log handlers may share stderr in a full run: keep the JSON status lines only.
    err_lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in err_lines if line.startswith('{"status"')]
    final = records[-1]
    assert final["status"] == "final"
    for key in ("requests", "not_modified", "new_events", "duplicates", "gaps", "published"):
        assert key in final
    assert final["rate_remaining"] is not None
