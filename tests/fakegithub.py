"""A fake GitHub Events API on loopback, and a clock the tests drive, for the poller's tests.

:class:`FakeGitHub` is a real HTTP/1.1 server (``asyncio.start_server`` on
127.0.0.1, keep-alive) that serves feeds of real recorded events as a *moving*
feed: events appear at scheduled times of a :class:`FakeClock`, newest first,
within a 300-event window, paged by ``per_page`` with ``Link`` headers. Its
replies copy the shape of the recorded responses in
``../shared/data/events_api/`` (github3.py and PyGithub recordings): the same
header names, weak or strong ``ETag``, ``Link`` with ``next/last/first/prev``
that switch to the numeric ``/repositories/ID/events`` form after page 1,
``X-Poll-Interval: 60`` and ``X-RateLimit-*`` headers that count down per
token (60 an hour without one), a 304 that costs nothing, and a 422
"pagination is limited" past the window.

Faults are scripted per feed with :meth:`FakeFeed.add_faults`; every request is
recorded in :attr:`FakeGitHub.requests`, and requests that broke a rule (over
budget, before ``Retry-After``) are counted in :attr:`FakeGitHub.violations`.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import itertools
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

WINDOW = 300
ANONYMOUS_LIMIT = 60
TOKEN_LIMIT = 5000
RATE_WINDOW_S = 3600
PAGINATION_LIMITED = (
    "In order to keep the API fast for everyone, pagination is limited for this resource. "
    "Check the rel=last link relation in the Link response header to see how far back you "
    "can traverse."
)
SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


class FakeClock:
    """Monotonic and wall time that only move when someone sleeps; sleeping returns at once."""

    def __init__(self, wall_start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = 0.0
        self.wall_start = wall_start
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_start + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the clock reaches ``when``."""
        heapq.heappush(self._timers, (when, next(self._order), callback))


def load_real_events(shared_data: Path, *, public_only: bool = True) -> list[dict[str, Any]]:
    """Every distinct recorded Events API event under ``events_api/``, in a fixed shuffled order.

    The shuffle keeps ids out of order along the feed, as they are on GitHub.
    """
    root = shared_data / "events_api"
    bodies: list[Any] = []
    for name in sorted(root.glob("*/*.normalized.json")):
        for exchange in json.loads(name.read_text(encoding="utf-8")):
            bodies.append(exchange["response"].get("body"))
    for name in sorted(root.glob("*/*.json")):
        if not name.name.endswith(".normalized.json"):
            bodies.append(json.loads(name.read_text(encoding="utf-8")))

    events: dict[str, dict[str, Any]] = {}
    for body in bodies:
        for event in body if isinstance(body, list) else ():
            if isinstance(event, dict) and event.get("id") and event.get("type"):
                if public_only and event.get("public") is False:
                    continue
                events.setdefault(str(event["id"]), event)
    shuffled = list(events.values())
    random.Random(4).shuffle(shuffled)
    return shuffled


def recorded_page_headers(shared_data: Path) -> dict[str, str]:
    """The headers of a real ``GET /events?per_page=...`` page, as recorded by github3.py."""
    path = shared_data / "events_api" / "github3.py" / "github3py.normalized.json"
    for exchange in json.loads(path.read_text(encoding="utf-8")):
        if exchange["request"]["url"].startswith("https://api.github.com/events?"):
            return dict(exchange["response"]["headers"])
    raise LookupError("no recorded /events page")


@dataclass
class Budget:
    limit: int
    remaining: int
    reset_epoch: int


@dataclass
class Request:
    """One request as the server saw it."""

    at: float
    """Fake monotonic time."""
    path: str
    page: int
    per_page: int
    if_none_match: str | None
    token: str | None
    status: int = 0
    fault: str | None = None
    poll_interval: int | None = None
    """The X-Poll-Interval sent back."""
    window_ids: tuple[str, ...] = ()
    """Ids inside the feed's window when a first page was served with 200."""
    served_ids: tuple[str, ...] = ()


@dataclass
class FakeFeed:
    """One feed: events released over fake time, and faults to play."""

    path: str
    numeric_path: str
    events: list[dict[str, Any]]
    release_at: list[float]
    weak_etag: bool = True
    poll_interval: int | None = 60
    link_past_window: bool = False
    """Make the last page of the window still offer rel=next, which then answers 422."""
    faults: deque[str] = field(default_factory=deque)
    stuck_etag: str | None = None
    stick_next_etag: bool = False
    limited_until: float = 0.0

    def add_faults(self, *faults: str) -> None:
        """Answer the next requests to this feed with these faults, in order.

        ``500``, ``502``, ``drop`` (close the connection), ``invalid_json``,
        ``secondary_403`` (with Retry-After: 120), ``429`` (budget spent until
        reset), ``401``, ``stale_etag`` (from now on, answer 304 to the ETag the
        client sends next, whatever the content; takes no request).
        """
        for fault in faults:
            if fault == "stale_etag":
                self.stick_next_etag = True
            else:
                self.faults.append(fault)

    def window(self, now: float, wall_start: float) -> list[dict[str, Any]]:
        """The feed as GitHub would list it at ``now``: the newest WINDOW events, newest first."""
        released = bisect.bisect_right(self.release_at, now)
        start = max(0, released - WINDOW)
        out = []
        for index in range(released - 1, start - 1, -1):
            created = datetime.fromtimestamp(wall_start + self.release_at[index], UTC)
            stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
            out.append({**self.events[index], "created_at": stamp})
        return out

    def etag(self, items: Iterable[dict[str, Any]]) -> str:
        digest = hashlib.md5(",".join(str(e["id"]) for e in items).encode()).hexdigest()
        return f'W/"{digest}"' if self.weak_etag else f'"{digest}"'

    def ids_released_by(self, now: float) -> list[str]:
        released = bisect.bisect_right(self.release_at, now)
        return [str(e["id"]) for e in self.events[:released]]


class FakeGitHub:
    """The server; use as ``async with FakeGitHub(clock) as github:``."""

    def __init__(self, clock: FakeClock, *, token_limit: int = TOKEN_LIMIT) -> None:
        self.clock = clock
        self.token_limit = token_limit
        self.feeds: dict[str, FakeFeed] = {}
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.budgets: dict[str | None, Budget] = {}
        self.on_request: Callable[[Request], None] | None = None
        """Called with each request once its reply is ready (tests use it to stop mid-poll)."""
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ids = itertools.count(3710711)
        self.api_url = ""

    async def __aenter__(self) -> FakeGitHub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.api_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Close the connections the client left open, so each handler ends on EOF.
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    def add_feed(
        self,
        path: str,
        events: list[dict[str, Any]],
        *,
        backlog: int = 0,
        per_second: float = 1.0,
        start: float = 0.0,
        laps: int = 1,
        **options: Any,
    ) -> FakeFeed:
        """A feed whose first ``backlog`` events exist at ``start``, then ``per_second`` arrive.

        ``laps`` > 1 replays the events again with shifted ids, for long busy feeds.
        """
        events = [
            event if lap == 0 else {**event, "id": str(int(event["id"]) + lap * 10**12)}
            for lap in range(laps)
            for event in events
        ]
        backlog = min(backlog, len(events))
        release = [start - (backlog - 1 - i) / per_second for i in range(backlog)]
        release += [start + (i + 1) / per_second for i in range(len(events) - backlog)]
        feed = FakeFeed(path, f"repositories/{next(self._ids)}/events", events, release, **options)
        self.feeds[path] = feed
        self.feeds[feed.numeric_path] = feed
        return feed

    # -- what the tests read ----------------------------------------------------------------

    def first_pages(self, path: str) -> list[Request]:
        feed = self.feeds[path]
        return [
            r
            for r in self.requests
            if self.feeds.get(r.path) is feed and r.page == 1 and r.fault is None
        ]

    def ids_in_some_window(self, path: str) -> set[str]:
        return {i for r in self.first_pages(path) for i in r.window_ids}

    # -- HTTP -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                headers = await _read_headers(reader)
                target = request_line.decode("latin-1").split()[1]
                reply = self._respond(target, headers)
                if self.on_request is not None:
                    self.on_request(self.requests[-1])
                if reply is None:  # a dropped connection
                    break
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._connections.pop(task, None)

    def _respond(self, target: str, headers: dict[str, str]) -> bytes | None:
        url = urlsplit(target)
        query = parse_qs(url.query)
        auth = headers.get("authorization", "")
        request = Request(
            at=self.clock.now,
            path=url.path.strip("/"),
            page=int(query.get("page", ["1"])[0]),
            per_page=min(100, int(query.get("per_page", ["30"])[0])),
            if_none_match=headers.get("if-none-match"),
            token=auth.split(" ", 1)[1] if " " in auth else None,
        )
        self.requests.append(request)
        feed = self.feeds.get(request.path)
        if feed is None:
            return self._reply(request, 404, {"message": "Not Found"})
        budget = self._budget(request.token)

        if feed.faults:
            request.fault = feed.faults.popleft()
            return self._fault(request, feed, budget)
        if self.clock.now < feed.limited_until:
            self.violations.append(f"request at {self.clock.now} before Retry-After")
            return self._reply(request, 403, {"message": SECONDARY_LIMIT}, budget)
        if budget.remaining <= 0:
            self.violations.append(f"request at {self.clock.now} over budget")
            return self._reply(request, 403, {"message": "API rate limit exceeded"}, budget)
        return self._page(request, feed, budget)

    def _page(self, request: Request, feed: FakeFeed, budget: Budget) -> bytes:
        window = feed.window(self.clock.now, self.clock.wall_start)
        per_page = request.per_page
        max_page = math.ceil(WINDOW / per_page)
        budget.remaining -= 1
        if request.page > max_page:
            body = {"message": PAGINATION_LIMITED, "documentation_url": "https://docs.github.com"}
            return self._reply(request, 422, body, budget)

        items = window[(request.page - 1) * per_page : request.page * per_page]
        etag = feed.etag(items)
        if feed.stick_next_etag and request.if_none_match:
            feed.stuck_etag, feed.stick_next_etag = request.if_none_match, False
        if request.if_none_match is not None and request.if_none_match in (etag, feed.stuck_etag):
            budget.remaining += 1  # a 304 costs nothing
            return self._reply(request, 304, None, budget, etag=etag, feed=feed)

        if request.page == 1:
            request.window_ids = tuple(str(e["id"]) for e in window)
        request.served_ids = tuple(str(e["id"]) for e in items)
        link = self._link(feed, request, len(window))
        return self._reply(request, 200, items, budget, etag=etag, feed=feed, link=link)

    def _link(self, feed: FakeFeed, request: Request, count: int) -> str | None:
        base = f"{self.api_url}/{feed.numeric_path}?per_page={request.per_page}&page="
        last = max(1, math.ceil(count / request.per_page))
        links = []
        if request.page < last or (feed.link_past_window and request.page == last):
            links.append(f'<{base}{request.page + 1}>; rel="next"')
            links.append(f'<{base}{max(last, request.page + 1)}>; rel="last"')
        if request.page > 1:
            links.append(f'<{base}1>; rel="first"')
            links.append(f'<{base}{request.page - 1}>; rel="prev"')
        return ", ".join(links) or None

    def _fault(self, request: Request, feed: FakeFeed, budget: Budget) -> bytes | None:
        fault = request.fault
        if fault == "drop":
            request.status = -1
            return None
        if fault in ("500", "502"):
            return self._reply(request, int(fault), {"message": "Server Error"}, budget)
        if fault == "invalid_json":
            budget.remaining -= 1
            return self._reply(request, 200, None, budget, raw=b'[{"id": "1", "type": "Pu')
        if fault == "secondary_403":
            feed.limited_until = self.clock.now + 120
            return self._reply(
                request, 403, {"message": SECONDARY_LIMIT}, budget, extra={"Retry-After": "120"}
            )
        if fault == "429":
            budget.remaining = 0
            return self._reply(request, 429, {"message": "API rate limit exceeded"}, budget)
        if fault == "401":
            return self._reply(request, 401, {"message": "Bad credentials"}, budget)
        raise AssertionError(f"unknown fault {fault!r}")

    def _budget(self, token: str | None) -> Budget:
        now = int(self.clock.time())
        budget = self.budgets.get(token)
        if budget is None or now >= budget.reset_epoch:
            limit = ANONYMOUS_LIMIT if token is None else self.token_limit
            budget = Budget(limit, limit, now + RATE_WINDOW_S)
            self.budgets[token] = budget
        return budget

    def _reply(
        self,
        request: Request,
        status: int,
        body: Any,
        budget: Budget | None = None,
        *,
        etag: str | None = None,
        feed: FakeFeed | None = None,
        link: str | None = None,
        raw: bytes | None = None,
        extra: dict[str, str] | None = None,
    ) -> bytes:
        request.status = status
        payload = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        headers = {
            "Server": "GitHub.com",
            "Date": formatdate(self.clock.time(), usegmt=True),
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "public, max-age=60, s-maxage=60",
            "Vary": "Accept",
            "X-GitHub-Media-Type": "github.v3; format=json",
        }
        if budget is not None:
            headers["X-RateLimit-Limit"] = str(budget.limit)
            headers["X-RateLimit-Remaining"] = str(max(0, budget.remaining))
            headers["X-RateLimit-Reset"] = str(budget.reset_epoch)
            headers["X-RateLimit-Used"] = str(budget.limit - max(0, budget.remaining))
            headers["X-RateLimit-Resource"] = "core"
        if etag is not None:
            headers["ETag"] = etag
        if feed is not None and feed.poll_interval is not None:
            headers["X-Poll-Interval"] = str(feed.poll_interval)
            request.poll_interval = feed.poll_interval
        if link:
            headers["Link"] = link
        headers.update(extra or {})
        headers["Content-Length"] = str(len(payload))
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return head.encode("latin-1") + b"\r\n" + payload


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


class MemoryPublisher:
    """An in-memory stand-in for ``ghstream.kafka.EventPublisher`` with the same methods."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.raws: list[Any] = []
        self.gaps: list[dict[str, Any]] = []
        self.flushes = 0

    @property
    def published(self) -> int:
        return len(self.events)

    async def publish(self, event: Any, raw: bytes | dict[str, Any]) -> None:
        self.events.append(event)
        self.raws.append(raw)

    async def publish_gap(self, *, feed: str, detected_at: datetime, estimated_missed: int) -> None:
        self.gaps.append(
            {"feed": feed, "detected_at": detected_at, "estimated_missed": estimated_missed}
        )

    async def flush(self) -> None:
        self.flushes += 1

    def ids(self) -> list[str]:
        return [event.id for event in self.events]
