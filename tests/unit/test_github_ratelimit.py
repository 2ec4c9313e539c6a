"""Rate-limit rules, pacing and the poller's small pieces (id memory, gap estimate)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ghstream.poller import RecentIds, estimate_missed
from ghstream.ratelimit import (
    MIN_LIMITED_WAIT_S,
    RESET_MARGIN_S,
    RateLimit,
    RatePacer,
    exponential_backoff_s,
    limited_wait_s,
    parse_rate_limit,
    parse_retry_after,
)

NOW = 1_767_225_600.0


def test_rate_limit_headers_are_read_relative_to_now() -> None:
    headers = httpx.Headers(
        {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "53",
            "x-ratelimit-reset": "1767229200",
        }
    )
    assert parse_rate_limit(headers, NOW) == RateLimit(limit=60, remaining=53, reset_in_s=3600)
    assert parse_rate_limit(httpx.Headers({}), NOW) is None
    past = httpx.Headers({"x-ratelimit-remaining": "5", "x-ratelimit-reset": "1"})
    assert parse_rate_limit(past, NOW) == RateLimit(limit=None, remaining=5, reset_in_s=0)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "120"}), NOW) == 120
    dated = httpx.Headers({"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"})
    assert parse_retry_after(dated, NOW) == 60
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"}), NOW) is None
    assert parse_retry_after(httpx.Headers({}), NOW) is None


def test_limited_waits_follow_githubs_order() -> None:
    """Retry-After first; else the reset when nothing remains; else >= 60 s, growing."""
    rng = random.Random(1)
    spent = RateLimit(limit=5000, remaining=0, reset_in_s=900)
    left = RateLimit(limit=5000, remaining=10, reset_in_s=900)
    assert limited_wait_s(30.0, spent, 0, rng) == 30
    assert limited_wait_s(None, spent, 0, rng) == 900 + RESET_MARGIN_S
    waits = [limited_wait_s(None, left, attempt, rng) for attempt in range(4)]
    assert all(wait >= MIN_LIMITED_WAIT_S for wait in waits)
    assert waits[3] >= 8 * MIN_LIMITED_WAIT_S


@pytest.mark.parametrize("attempt", [0, 1, 5, 30])
def test_backoff_has_jitter_above_its_floor_and_a_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = {exponential_backoff_s(attempt, base_s=2, cap_s=60, rng=rng) for _ in range(50)}
    floor = min(60, 2 * 2**attempt)
    assert all(floor <= delay <= floor * 1.25 for delay in delays)
    assert len(delays) > 1


def test_the_pacer_spreads_the_remaining_budget_until_the_reset() -> None:
    """60 s to the reset and 10 requests: a burst of 3, then the 7 left evenly over 60 s."""
    pacer = RatePacer(("only",))
    slot, delay = pacer.choose(0.0)
    assert delay == 0  # nothing known yet

    now, sent = 0.0, []
    remaining = 10
    while remaining > 0:
        slot, delay = pacer.choose(now)
        now += delay
        sent.append(now)
        remaining -= 1
        pacer.record(slot, now, RateLimit(60, remaining, 60.0 - now), spent=True)
    assert len(sent) == 10 and sent[-1] <= 60 + 1e-6
    assert sent[:3] == [0.0, 0.0, 0.0]
    later = [b - a for a, b in itertools.pairwise(sent[2:])]
    assert all(gap == pytest.approx(60 / 7) for gap in later)

    spent = RatePacer(())
    slot, _ = spent.choose(0.0)
    spent.record(slot, 10.0, RateLimit(60, 0, 100.0), spent=True)
    assert spent.choose(10.0)[1] == 100 + RESET_MARGIN_S  # nothing before the reset
    assert spent.choose(111.0)[1] == 0


def test_the_pages_of_a_poll_go_out_back_to_back_and_the_next_poll_waits() -> None:
    """An empty bucket holds back a first page, not the pages after it; a spent budget both."""
    pacer = RatePacer(("only",))
    slot, _ = pacer.choose(0.0)
    for remaining in (99, 98, 97, 96, 95):  # a poll of 5 pages at t=0, 100 left over 100 s
        assert pacer.choose(0.0, next_page=True)[1] == 0
        pacer.record(slot, 0.0, RateLimit(5000, remaining, 100.0), spent=True)
    debt_wait = pacer.choose(0.0)[1]
    assert debt_wait == pytest.approx(3 / (95 / 100))  # from -2 back up to 1 at 0.95/s

    pacer.record(slot, 0.0, RateLimit(5000, 0, 100.0), spent=True)
    assert pacer.choose(0.0, next_page=True)[1] == 100 + RESET_MARGIN_S


def test_replies_that_cost_nothing_do_not_slow_the_pacer() -> None:
    pacer = RatePacer(())
    slot, _ = pacer.choose(0.0)
    for second in range(100):
        pacer.record(slot, float(second), RateLimit(60, 2, 3600.0 - second), spent=False)
        assert pacer.choose(float(second))[1] == 0


def test_tokens_are_taken_in_turn_and_a_blocked_one_is_skipped() -> None:
    pacer = RatePacer(("a", "b", "c"))
    order = []
    for _ in range(6):
        slot, delay = pacer.choose(0.0)
        assert delay == 0
        order.append(slot.index)
    assert order == [0, 1, 2, 0, 1, 2]

    pacer.block(pacer.slots[1], until=100.0)
    assert [pacer.choose(0.0)[0].index for _ in range(4)] == [0, 2, 0, 2]
    for slot in pacer.slots:
        pacer.block(slot, until=50.0 + slot.index)
    slot, delay = pacer.choose(0.0)
    assert (slot.index, delay) == (0, 50.0)


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(3)
    for event_id in ("1", "2", "3", "2", "4"):
        recent.add(event_id)
    assert "1" not in recent
    assert all(event_id in recent for event_id in ("2", "3", "4"))
    assert len(recent) == 3


def test_missed_events_are_estimated_from_the_windows_own_rate() -> None:
    """300 events over 25 s; the newest seen before is 35 s older than the window: ~419."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    oldest = start + timedelta(seconds=35)
    newest = oldest + timedelta(seconds=25)
    assert estimate_missed(start, oldest, newest, 300) == round(35 * 299 / 25) - 1
    assert estimate_missed(None, oldest, newest, 300) == 0
    assert estimate_missed(newest, oldest, newest, 300) == 0  # windows overlap in time
    assert estimate_missed(start, oldest, oldest, 300) == 0  # no spread to measure a rate
