"""The Events API polling engine behind ``ghstream ingest`` without ``--archive``.

:class:`EventsPoller` keeps, for every feed, the ETag, the poll interval and
the ids it saw recently; it polls the feed that is due next, pages through the
window, and publishes each event it has not seen before.

Event ids are not ordered (ids of 2026 are smaller than ids of 2024), so
duplicates are found with a bounded memory of recently seen ids, never by
comparing with the highest id seen.

**Gap detection.** After a feed's first complete poll, a complete poll whose
window shares no id with the ids that feed showed before means events may have
scrolled past the 300-event window between two polls. The poller counts it for
the feed, logs a warning, publishes a gap notice and shows it in the status
line. The number missed is estimated from the window's own arrival rate: with
``n`` events spread over ``s`` seconds of ``created_at``, and a hole of ``h``
seconds between the newest event seen before and the oldest event of the
window, about ``h * (n - 1) / s - 1`` events fell into the hole. The public
feed is delayed by GitHub by minutes to hours, so this is an estimate, and an
estimate of 0 means a gap may have been missed by nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from ghstream.errors import GitHubAuthError
from ghstream.github import (
    DEFAULT_POLL_INTERVAL_S,
    TOKEN_ENV,
    GitHubClient,
    LivePublisher,
    LiveSummary,
    PollerConfig,
    Reply,
    ReplyKind,
    feed_url,
)
from ghstream.model import InvalidEvent, normalize, parse_time
from ghstream.ratelimit import (
    Clock,
    RatePacer,
    TokenSlot,
    exponential_backoff_s,
    limited_wait_s,
)

log = logging.getLogger(__name__)

FEED_MEMORY = 1000
"""Ids remembered per feed for gap detection: more than a 300-event window."""
GLOBAL_MEMORY = 20_000
"""Ids remembered across feeds for deduplication (at least FEED_MEMORY per feed)."""
RETRIES_PER_REQUEST = 3
"""Retries of one request after a 5xx, a network error or an invalid page."""
RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0
MIN_POLL_INTERVAL_S = 1.0
"""Floor of ``--min-interval``."""
FEED_BACKOFF_CAP_S = 900.0
"""Longest pause of a feed after polls that failed in a row."""
STALE_ETAG_PUBLIC_S = 600.0
"""The public ``events`` feed is never unchanged this long: an ETag still answering 304 is stuck."""
STALE_ETAG_OTHER_S = 3600.0
"""Repository, org and user feeds can be quiet for a while; their ETags are trusted longer."""


class RecentIds:
    """A set of the most recently added ids; the oldest is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        if event_id in self._ids:
            return
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())


@dataclass
class FeedState:
    """What the poller remembers about one feed between polls."""

    path: str
    url: str
    recent: RecentIds = field(default_factory=lambda: RecentIds(FEED_MEMORY))
    etag: str | None = None
    not_modified_since: float | None = None
    """Monotonic time of the first 304 in the current run of 304s."""
    interval_s: float = DEFAULT_POLL_INTERVAL_S
    next_due: float = 0.0
    polled: bool = False
    """A poll of this feed completed, so the next one can tell a gap."""
    newest_seen_at: datetime | None = None
    failures: int = 0
    """Polls in a row that failed, for the feed's backoff."""

    @property
    def stale_etag_after_s(self) -> float:
        return STALE_ETAG_PUBLIC_S if self.path == "events" else STALE_ETAG_OTHER_S


@dataclass
class _Poll:
    """One pass over a feed's window."""

    ids: dict[str, None] = field(default_factory=dict)
    """Ids of the window in the order read; the feed's history once the poll completes."""
    count: int = 0
    overlap: bool = False
    """Some event of the window was seen by an earlier poll of the feed."""
    oldest: datetime | None = None
    newest: datetime | None = None
    etag: str | None = None
    complete: bool = False


def estimate_missed(
    prev_newest: datetime | None, oldest: datetime | None, newest: datetime | None, count: int
) -> int:
    """Events that likely fell between two windows (see the module docstring); 0 if unknown."""
    if prev_newest is None or oldest is None or newest is None or count < 2:
        return 0
    span_s = (newest - oldest).total_seconds()
    hole_s = (oldest - prev_newest).total_seconds()
    if span_s <= 0 or hole_s <= 0:
        return 0
    return max(0, round(hole_s * (count - 1) / span_s) - 1)


class EventsPoller:
    """Polls feeds, skips what it saw, detects gaps and publishes; see ``github.run_live``."""

    def __init__(
        self,
        config: PollerConfig,
        publisher: LivePublisher,
        stop: asyncio.Event,
        *,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.summary = LiveSummary()
        self._publisher = publisher
        self._stop = stop
        self._clock = clock
        self._rng = rng or random.Random()
        self._client = GitHubClient(config.api_url, clock, transport)
        self._pacer = RatePacer(config.tokens)
        self._seen = RecentIds(max(GLOBAL_MEMORY, FEED_MEMORY * len(config.feeds)))
        self._feeds = [FeedState(path, feed_url(config.api_url, path)) for path in config.feeds]
        self._next_status = clock.monotonic() + config.status_every_s

    async def run(self) -> LiveSummary:
        """Poll until stopped (or once over every feed); flush the publisher in every case."""
        log.info(
            "polling %d feed(s) from %s with %s: %s",
            len(self._feeds),
            self.config.api_url,
            f"{len(self.config.tokens)} token(s)" if self.config.tokens else "no token",
            ", ".join(feed.path for feed in self._feeds[:5])
            + (" ..." if len(self._feeds) > 5 else ""),
        )
        try:
            if self.config.once:
                await self._poll_each_once()
            else:
                await self._poll_until_stopped()
        finally:
            try:
                await self._client.aclose()
                await self._publisher.flush()
            finally:
                self._emit_status(final=True)
        return self.summary

    async def _poll_each_once(self) -> None:
        for feed in self._feeds:
            if self._stop.is_set():
                return
            await self._poll(feed)
            self._maybe_status()

    async def _poll_until_stopped(self) -> None:
        while not self._stop.is_set():
            feed = min(self._feeds, key=lambda f: f.next_due)
            now = self._clock.monotonic()
            if feed.next_due > now:
                await self._wait(min(feed.next_due, self._next_status) - now)
                self._maybe_status()
                continue
            await self._poll(feed)
            self._maybe_status()

    async def _wait(self, seconds: float) -> bool:
        """Sleep on the clock, waking early when stopped; ``False`` when stopped."""
        if self._stop.is_set():
            return False
        if seconds > 0:
            sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
                await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return not self._stop.is_set()

    # -- one poll ----------------------------------------------------------------------------

    async def _poll(self, feed: FeedState) -> None:
        poll = _Poll()
        url: str | None = feed.url
        etag = self._etag_to_send(feed)
        self.summary.polls += 1

        first = True
        while url is not None:
            result = await self._request(feed, url, etag if first else None, next_page=not first)
            if result is None:
                self._poll_failed(feed)
                return
            reply, sent_at = result

            if first:
                self._schedule(feed, reply, sent_at)
                poll.etag = reply.etag
            if reply.kind is ReplyKind.NOT_MODIFIED:
                self.summary.not_modified += 1
                if feed.not_modified_since is None:
                    feed.not_modified_since = sent_at
                feed.failures = 0
                return
            if reply.kind is ReplyKind.END_OF_WINDOW:
                log.debug("%s: end of the window (%s)", feed.path, reply.detail)
                break

            page_known = await self._take_page(feed, reply.events, poll)
            if not reply.events or page_known:
                break
            if self._stop.is_set():
                return  # the page in hand is published; the window is not, so no ETag
            url = reply.next_url
            first = False

        poll.complete = True
        await self._finish(feed, poll)

    def _etag_to_send(self, feed: FeedState) -> str | None:
        """The feed's ETag, unless it has answered 304 for too long (see ``github``)."""
        if feed.etag is None or feed.not_modified_since is None:
            return feed.etag
        stuck_for = self._clock.monotonic() - feed.not_modified_since
        if stuck_for < feed.stale_etag_after_s:
            return feed.etag
        log.info(
            "%s: ETag %s answered 304 for %.0f s; asking without it once",
            feed.path,
            feed.etag,
            stuck_for,
        )
        self.summary.etags_dropped += 1
        feed.etag = None
        feed.not_modified_since = None
        return None

    def _schedule(self, feed: FeedState, reply: Reply, sent_at: float) -> None:
        """Next poll of ``feed``: the interval after this first-page request was sent."""
        if self.config.min_interval_s is not None:
            # Even when asked for, 304s cost no budget, so only this floor keeps them polite.
            feed.interval_s = max(MIN_POLL_INTERVAL_S, self.config.min_interval_s)
        else:
            feed.interval_s = reply.poll_interval_s or DEFAULT_POLL_INTERVAL_S
        feed.next_due = sent_at + feed.interval_s

    def _poll_failed(self, feed: FeedState) -> None:
        if self._stop.is_set():
            return
        feed.failures += 1
        pause = exponential_backoff_s(
            feed.failures - 1,
            base_s=feed.interval_s,
            cap_s=FEED_BACKOFF_CAP_S,
            rng=self._rng,
        )
        feed.next_due = self._clock.monotonic() + pause
        log.warning(
            "%s: poll failed (%d in a row); next try in %.0f s", feed.path, feed.failures, pause
        )

    async def _take_page(self, feed: FeedState, events: list[Any], poll: _Poll) -> bool:
        """Publish a page's new events, oldest first; whether all were seen before this poll."""
        all_known = bool(events)
        for raw in reversed(events):
            key = _event_key(raw)
            known_before = key is not None and key in feed.recent
            poll.overlap = poll.overlap or known_before
            all_known = all_known and known_before
            if key is not None:
                poll.ids[key] = None
            self._note_time(poll, raw)
            poll.count += 1
            await self._publish_once(feed, key, raw)
        return all_known

    async def _publish_once(self, feed: FeedState, key: str | None, raw: Any) -> None:
        if key is not None and key in self._seen:
            self.summary.duplicates += 1
            return
        try:
            event = normalize(raw)
        except InvalidEvent as exc:
            self.summary.invalid_events += 1
            log.warning("%s: skipped an object that is not an event: %s", feed.path, exc)
            return
        if event.id in self._seen:  # an event without an id, seen under its synthetic id
            self.summary.duplicates += 1
            return
        self._seen.add(event.id)
        if not event.public:
            self.summary.private_skipped += 1
            log.debug("%s: skipped private event %s", feed.path, event.id)
            return
        await self._publisher.publish(event, raw)
        self.summary.new_events += 1

    @staticmethod
    def _note_time(poll: _Poll, raw: Any) -> None:
        created_at = parse_time(raw.get("created_at")) if isinstance(raw, dict) else None
        if created_at is None:
            return
        if poll.oldest is None or created_at < poll.oldest:
            poll.oldest = created_at
        if poll.newest is None or created_at > poll.newest:
            poll.newest = created_at

    async def _finish(self, feed: FeedState, poll: _Poll) -> None:
        """Keep the ETag of a complete poll, and report a gap if the window moved past us."""
        feed.failures = 0
        feed.etag = poll.etag
        feed.not_modified_since = None
        # Only a complete window becomes history: after a poll cut short, the next
        # one must not stop at a page that only that poll had read.
        for key in poll.ids:
            feed.recent.add(key)

        if feed.polled and poll.count and not poll.overlap:
            await self._report_gap(feed, poll)
        feed.polled = True
        if poll.newest is not None and (
            feed.newest_seen_at is None or poll.newest > feed.newest_seen_at
        ):
            feed.newest_seen_at = poll.newest

    async def _report_gap(self, feed: FeedState, poll: _Poll) -> None:
        missed = estimate_missed(feed.newest_seen_at, poll.oldest, poll.newest, poll.count)
        self.summary.gaps += 1
        self.summary.estimated_missed += missed
        self.summary.gaps_by_feed[feed.path] = self.summary.gaps_by_feed.get(feed.path, 0) + 1
        self.summary.missed_by_feed[feed.path] = (
            self.summary.missed_by_feed.get(feed.path, 0) + missed
        )
        log.warning(
            "%s: gap: none of the %d events in the window was seen before; "
            "about %d events may have been missed (poll more often, or follow narrower feeds)",
            feed.path,
            poll.count,
            missed,
        )
        detected_at = datetime.fromtimestamp(self._clock.time(), UTC)
        await self._publisher.publish_gap(
            feed=feed.path, detected_at=detected_at, estimated_missed=missed
        )

    # -- one request -------------------------------------------------------------------------

    async def _request(
        self, feed: FeedState, url: str, etag: str | None, *, next_page: bool
    ) -> tuple[Reply, float] | None:
        """GET with pacing, rate-limit waits and retries; ``None`` when stopped or given up."""
        attempt = 0
        while not self._stop.is_set():
            slot, delay = self._pacer.choose(self._clock.monotonic(), next_page=next_page)
            if delay > 0:
                if delay > 5:
                    log.debug("%s: pacing: waiting %.1f s for %s", feed.path, delay, slot.label)
                if not await self._wait(delay):
                    return None
            sent_at = self._clock.monotonic()
            reply = await self._client.get(url, etag, slot)
            self._account(slot, sent_at, reply)

            if reply.kind in (ReplyKind.PAGE, ReplyKind.NOT_MODIFIED, ReplyKind.END_OF_WINDOW):
                slot.limited_streak = 0
                return reply, sent_at
            if reply.kind is ReplyKind.UNAUTHORIZED:
                raise _auth_error(slot, feed, reply)
            if reply.kind is ReplyKind.RATE_LIMITED:
                self._back_off_limited(feed, slot, reply)
                continue
            if reply.kind is ReplyKind.FAILED:
                self.summary.errors += 1
                hint = (
                    " (check the name: is it spelled right and public?)"
                    if reply.status == 404
                    else ""
                )
                log.warning("%s: GitHub answered %s%s", feed.path, reply.detail, hint)
                return None

            attempt += 1
            if reply.invalid_body:
                self.summary.invalid_pages += 1
            else:
                self.summary.errors += 1
            if attempt > RETRIES_PER_REQUEST:
                log.warning("%s: giving up this poll after %d tries", feed.path, attempt)
                return None
            pause = exponential_backoff_s(
                attempt - 1, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S, rng=self._rng
            )
            log.warning("%s: %s; retrying in %.1f s", feed.path, reply.detail, pause)
            if not await self._wait(pause):
                return None
        return None

    def _account(self, slot: TokenSlot, sent_at: float, reply: Reply) -> None:
        self.summary.requests += 1
        self._pacer.record(slot, sent_at, reply.rate, reply.spent_budget)
        remaining = self._pacer.remaining()
        if remaining is not None:
            self.summary.rate_remaining = remaining

    def _back_off_limited(self, feed: FeedState, slot: TokenSlot, reply: Reply) -> None:
        self.summary.rate_limited += 1
        wait = limited_wait_s(reply.retry_after_s, reply.rate, slot.limited_streak, self._rng)
        slot.limited_streak += 1
        self._pacer.block(slot, self._clock.monotonic() + wait)
        log.warning(
            "%s: rate limited (%s) using %s; waiting %.0f s",
            feed.path,
            reply.detail,
            slot.label,
            wait,
        )

    # -- status ------------------------------------------------------------------------------

    def _maybe_status(self) -> None:
        now = self._clock.monotonic()
        if now < self._next_status:
            return
        self._emit_status()
        self._next_status = now + self.config.status_every_s

    def _emit_status(self, *, final: bool = False) -> None:
        summary = self.summary
        summary.published = self._publisher.published
        if self.config.json_status:
            record = {"status": "final" if final else "running", **summary.to_dict()}
            sys.stderr.write(orjson.dumps(record).decode() + "\n")
            sys.stderr.flush()
            return
        gaps = ",".join(f"{path}:{n}" for path, n in summary.gaps_by_feed.items())
        log.info(
            "%s requests=%d not_modified=%d new=%d duplicates=%d gaps=%d%s missed~%d "
            "rate_remaining=%s published=%d errors=%d rate_limited=%d invalid_pages=%d",
            "final" if final else "status",
            summary.requests,
            summary.not_modified,
            summary.new_events,
            summary.duplicates,
            summary.gaps,
            f" ({gaps})" if gaps else "",
            summary.estimated_missed,
            "?" if summary.rate_remaining is None else summary.rate_remaining,
            summary.published,
            summary.errors,
            summary.rate_limited,
            summary.invalid_pages,
        )


def _event_key(raw: Any) -> str | None:
    """GitHub's id of a raw event, or ``None`` if it has none."""
    if not isinstance(raw, dict):
        return None
    raw_id = raw.get("id")
    if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and raw_id != "":
        return str(raw_id)
    return None


def _auth_error(slot: TokenSlot, feed: FeedState, reply: Reply) -> GitHubAuthError:
    if slot.label == "no token":
        hint = f"set a token in {TOKEN_ENV} or pass --token-file"
    else:
        hint = f"check the tokens in {TOKEN_ENV} or --token-file (this was {slot.label})"
    return GitHubAuthError(f"GitHub refused the request for {feed.path} ({reply.detail}): {hint}")
