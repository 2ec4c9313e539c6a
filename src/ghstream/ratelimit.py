"""Time and GitHub's rate limits: an injectable clock, header parsing, pacing and backoff.

Nothing here does I/O, so the rules can be tested with a hand-driven clock.

GitHub's rules, as documented at
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api:

* every response carries ``x-ratelimit-limit/remaining/reset`` (reset is epoch seconds);
* a 304 to a conditional request does not spend the budget;
* when limited (403 or 429): wait ``Retry-After`` seconds if present; else, if
  ``x-ratelimit-remaining`` is 0, wait until ``x-ratelimit-reset``; else wait at
  least one minute, longer (exponentially) while it keeps failing.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

#: A failed secondary limit with no hint is retried after at least this long.
MIN_LIMITED_WAIT_S = 60.0
#: Never wait longer than this for one limited reply without a server hint.
MAX_LIMITED_WAIT_S = 3600.0
#: Requests a token may send at once before pacing spreads them out.
BURST_REQUESTS = 3
#: Added to a reset time, so the first request of the new window is not early.
RESET_MARGIN_S = 1.0


class Clock(Protocol):
    """Where the poller reads time and sleeps; tests pass one they drive by hand."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; the poller's time base."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds, used only when a reply carries no ``Date``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The budget one reply reported."""

    limit: int | None
    remaining: int
    reset_in_s: float
    """Seconds from the reply until the budget is renewed (never negative)."""


def server_time(headers: httpx.Headers, clock: Clock) -> float:
    """The server's epoch time from ``Date``, else ours.

    Reading the reset time against the server's own clock keeps a skewed local
    clock from making the poller wake early or late.
    """
    value = headers.get("date")
    if value:
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            pass
    return clock.time()


def parse_rate_limit(headers: httpx.Headers, now_epoch: float) -> RateLimit | None:
    """The ``x-ratelimit-*`` headers of a reply, or ``None`` when absent or unreadable."""
    try:
        remaining = int(headers["x-ratelimit-remaining"])
        reset_epoch = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    limit_text = headers.get("x-ratelimit-limit", "")
    limit = int(limit_text) if limit_text.isdigit() else None
    return RateLimit(limit=limit, remaining=remaining, reset_in_s=max(0.0, reset_epoch - now_epoch))


def parse_retry_after(headers: httpx.Headers, now_epoch: float) -> float | None:
    """``Retry-After`` in seconds (GitHub sends seconds; an HTTP date is accepted too)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_epoch)
    except (TypeError, ValueError):
        return None


def exponential_backoff_s(
    attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """``base_s * 2**attempt`` capped at ``cap_s``, plus up to 25% jitter; never below ``base_s``.

    The jitter is only ever added, so a documented minimum (GitHub's one
    minute for secondary limits) holds, and several pollers do not retry in step.
    """
    rng = rng or random.Random()
    delay: float = min(cap_s, base_s * (2.0 ** max(0, attempt)))
    return delay + rng.uniform(0.0, delay * 0.25)


def limited_wait_s(
    retry_after_s: float | None, rate: RateLimit | None, attempt: int, rng: random.Random
) -> float:
    """How long to wait after a 403/429 rate-limit reply, by GitHub's documented order."""
    if retry_after_s is not None:
        return retry_after_s
    if rate is not None and rate.remaining <= 0:
        return rate.reset_in_s + RESET_MARGIN_S
    return exponential_backoff_s(
        attempt, base_s=MIN_LIMITED_WAIT_S, cap_s=MAX_LIMITED_WAIT_S, rng=rng
    )


class TokenSlot:
    """One credential (or none) and the budget GitHub reported for it.

    The token itself never appears in ``repr``: only its position in the list.
    """

    def __init__(self, index: int, token: str | None, count: int) -> None:
        self.index = index
        self._token = token
        self._count = count
        self.remaining: int | None = None
        self.limit: int | None = None
        self.reset_at: float = 0.0
        """Monotonic time at which the budget is renewed."""
        self.blocked_until: float = 0.0
        """Monotonic time before which a rate-limit reply told us not to ask."""
        self.limited_streak = 0
        """Rate-limit replies in a row without a hint, for the exponential wait."""
        self.level: float = 0.0
        """Requests that may go out at once (a token bucket holding at most a burst)."""
        self.level_at: float = 0.0
        self.refill_per_s: float = 0.0
        """Remaining budget over the time to reset: the pace that makes it last."""

    @property
    def label(self) -> str:
        """``token 2 of 3`` or ``no token``: safe to log."""
        if self._token is None:
            return "no token"
        return f"token {self.index + 1} of {self._count}"

    def auth_header(self) -> dict[str, str]:
        """The ``Authorization`` header for a request made with this slot."""
        return {} if self._token is None else {"Authorization": f"Bearer {self._token}"}

    def __repr__(self) -> str:
        return f"<TokenSlot {self.label} remaining={self.remaining}>"


class RatePacer:
    """Spreads each token's remaining budget evenly over the time left until its reset.

    Before each request the poller asks :meth:`choose` which token to use and
    how long to wait first. Each token has a small bucket of requests that
    refills at ``remaining / seconds-to-reset``, recomputed from every reply, so
    the budget lasts until the reset. The later pages of a poll are not held
    back (the feed moves while a poll pages through it, and a pause between
    pages lets events slide out of the window): they may take the bucket below
    zero, and the next poll waits that much longer. A token whose budget is
    spent is not used again before its reset, so the budget is never exceeded.
    Replies that cost nothing (304) take nothing from the bucket.
    """

    def __init__(self, tokens: tuple[str, ...]) -> None:
        if tokens:
            self.slots = [TokenSlot(i, token, len(tokens)) for i, token in enumerate(tokens)]
        else:
            self.slots = [TokenSlot(0, None, 0)]
        self._next = 0

    def delay_s(self, slot: TokenSlot, now: float, *, next_page: bool = False) -> float:
        """Seconds to wait before ``slot`` may send a request (a poll's next page: no pacing)."""
        wait = max(0.0, slot.blocked_until - now)
        if slot.remaining is None:
            return wait
        if now >= slot.reset_at:
            slot.remaining = None  # the window renewed; the next reply tells the new budget
            return wait
        if slot.remaining <= 0:
            return max(wait, slot.reset_at + RESET_MARGIN_S - now)
        level = self._level(slot, now)
        if next_page or level >= 1.0 or slot.refill_per_s <= 0:
            return wait
        return max(wait, (1.0 - level) / slot.refill_per_s)

    def choose(self, now: float, *, next_page: bool = False) -> tuple[TokenSlot, float]:
        """The token to use next, taken in turn, and how long to wait before using it.

        The first token in turn that may send at once is taken; when every
        token must wait, the one free soonest. ``next_page`` asks for a page
        after the first of a poll, which only a spent budget or a rate-limit
        reply holds back.
        """
        count = len(self.slots)
        order = [self.slots[(self._next + i) % count] for i in range(count)]
        best = min(order, key=lambda slot: self.delay_s(slot, now, next_page=next_page))
        self._next = (best.index + 1) % count
        return best, self.delay_s(best, now, next_page=next_page)

    def record(self, slot: TokenSlot, sent_at: float, rate: RateLimit | None, spent: bool) -> None:
        """Account for a reply to a request sent at ``sent_at`` (monotonic)."""
        known = slot.remaining is not None and sent_at < slot.reset_at
        level = self._level(slot, sent_at) if known else float(BURST_REQUESTS)
        if rate is not None:
            slot.remaining = rate.remaining
            slot.limit = rate.limit
            slot.reset_at = sent_at + rate.reset_in_s
        if spent:
            level -= 1.0
        slot.level, slot.level_at = level, sent_at
        if slot.remaining is not None and slot.remaining > 0:
            slot.refill_per_s = slot.remaining / max(slot.reset_at - sent_at, 1e-3)

    def block(self, slot: TokenSlot, until: float) -> None:
        """Do not use ``slot`` before ``until`` (monotonic), after a rate-limit reply."""
        slot.blocked_until = max(slot.blocked_until, until)

    def remaining(self) -> int | None:
        """Requests left across all tokens, as last reported; ``None`` before any reply."""
        known = [slot.remaining for slot in self.slots if slot.remaining is not None]
        return sum(known) if known else None

    @staticmethod
    def _level(slot: TokenSlot, now: float) -> float:
        capacity = float(min(BURST_REQUESTS, max(slot.remaining or 0, 1)))
        refilled = slot.level + slot.refill_per_s * max(0.0, now - slot.level_at)
        return min(capacity, refilled)  # below zero after a poll's pages: a debt to wait out
