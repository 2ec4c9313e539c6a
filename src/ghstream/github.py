"""Live ingestion from the GitHub Events API: configuration and the HTTP edge.

:func:`run_live` polls one or more event feeds (``/events``, a repository's,
an organisation's or a user's) and hands each new event to the Kafka
publisher. The polling engine is :mod:`ghstream.poller`; pacing and the
rate-limit rules are :mod:`ghstream.ratelimit`. This module holds what the
command line needs (:class:`PollerConfig`, :func:`feeds_from_args`,
:func:`load_tokens`) and :class:`GitHubClient`, which turns one HTTP exchange
into a :class:`Reply` and converts httpx errors at this edge.

Rules the poller follows (GitHub's, from
https://docs.github.com/en/rest/activity/events and the rate-limit docs):

* ``per_page=100`` and the ``Link`` header's ``rel="next"`` (URLs are never
  built by hand: GitHub switches to ``/repositories/ID/...`` forms) across the
  window of at most 300 events. A poll stops at a missing ``next``, an empty
  page, a page whose events were all seen before, or a 422 "pagination is
  limited" reply, which means the end of the window, not a failure.
* The first page's ``ETag`` is kept exactly as sent (quotes and ``W/``) and sent
  back in ``If-None-Match``; a 304 costs no budget. The ETag is only kept once
  the whole poll succeeded, so a poll cut short is fetched again in full.
  **Stale ETag rule**: an ETag that has answered 304 for 10 minutes straight on
  the public ``events`` feed (which in reality changes every second), or for an
  hour on a repository/org/user feed (which can be quiet that long), is dropped
  once: the next request goes out without ``If-None-Match``. This guards against
  GitHub's cache answering 304 for content that changed, at a cost of one
  request per feed per period.
* A feed is polled no more often than its ``X-Poll-Interval`` (60 s when the
  header is missing). ``--min-interval`` replaces that interval only when given
  explicitly (never below 1 s); rate-limit pacing applies on top in every case.
* Tokens are used in turn; each one's remaining budget is spread over the
  time to its reset. No token is ever logged, put in a message or a ``repr``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import orjson

from ghstream import __version__
from ghstream.config import DEFAULT_API_URL
from ghstream.errors import ConfigError
from ghstream.ratelimit import (
    Clock,
    RateLimit,
    SystemClock,
    TokenSlot,
    parse_rate_limit,
    parse_retry_after,
    server_time,
)

if TYPE_CHECKING:
    import asyncio

    from ghstream.model import Event

log = logging.getLogger(__name__)

PER_PAGE = 100
DEFAULT_POLL_INTERVAL_S = 60.0
REQUEST_TIMEOUT_S = 30.0
TOKEN_ENV = "GITHUB_TOKEN"

_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_REPO_NAME = r"[A-Za-z0-9._-]{1,100}"
_REPO_RE = re.compile(rf"^{_OWNER}/{_REPO_NAME}$")
_LOGIN_RE = re.compile(rf"^{_OWNER}$")
_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?([^",;]+)"?')


@dataclass(frozen=True)
class PollerConfig:
    """What to poll and how; built by ``ghstream ingest`` from its flags."""

    api_url: str = DEFAULT_API_URL
    feeds: tuple[str, ...] = ("events",)
    """API paths: ``events``, ``repos/OWNER/NAME/events``, ``orgs/ORG/events``,
    ``users/LOGIN/events``."""
    tokens: tuple[str, ...] = field(default=(), repr=False)
    """Used in turn; never logged."""
    min_interval_s: float | None = None
    """Replaces ``X-Poll-Interval`` when given (it may lower it); rate pacing still applies."""
    once: bool = False
    """Poll every feed once, then return."""
    status_every_s: float = 30.0
    json_status: bool = False
    """Status lines as JSON on stderr."""


@dataclass
class LiveSummary:
    """Counters of a live run; the status line shows them and ``run_live`` returns them."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    not_modified: int = 0
    new_events: int = 0
    duplicates: int = 0
    """Events already seen (overlapping pages, or the same event in two feeds)."""
    invalid_events: int = 0
    """Objects that are not events (no type or created_at); logged and skipped."""
    private_skipped: int = 0
    """Events marked ``"public": false`` (authenticated user/org feeds); never published."""
    invalid_pages: int = 0
    """Replies whose body was not a JSON array; retried."""
    errors: int = 0
    """Server errors, network errors and unexpected replies."""
    rate_limited: int = 0
    """403/429 rate-limit replies."""
    polls: int = 0
    gaps: int = 0
    estimated_missed: int = 0
    gaps_by_feed: dict[str, int] = field(default_factory=dict)
    missed_by_feed: dict[str, int] = field(default_factory=dict)
    rate_remaining: int | None = None
    published: int = 0
    etags_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


class LivePublisher(Protocol):
    """What the poller needs from ``ghstream.kafka.EventPublisher``."""

    @property
    def published(self) -> int: ...

    async def publish(self, event: Event, raw: bytes | dict[str, Any]) -> None: ...

    async def publish_gap(
        self, *, feed: str, detected_at: datetime, estimated_missed: int
    ) -> None: ...

    async def flush(self) -> None: ...


def _parse_feed_spec(spec: str) -> str | None:
    """The API path for ``owner/name``, ``org:NAME`` or ``user:LOGIN``; ``None`` if invalid."""
    kind, sep, name = spec.partition(":")
    if sep:
        kind = kind.strip().lower()
        name = name.strip()
        if kind == "org" and _LOGIN_RE.match(name):
            return f"orgs/{name}/events"
        if kind == "user" and _LOGIN_RE.match(name):
            return f"users/{name}/events"
        if kind == "repo" and _REPO_RE.match(name):
            return f"repos/{name}/events"
        return None
    return f"repos/{spec}/events" if _REPO_RE.match(spec) else None


def feeds_from_args(
    repos: Sequence[str], orgs: Sequence[str], users: Sequence[str], watch_file: Path | None
) -> tuple[str, ...]:
    """The feeds to poll, as API paths, in the order given and without repeats.

    With nothing given, the public feed ``events``. The watch file has one
    ``owner/name``, ``org:NAME`` or ``user:LOGIN`` per line; blank lines and
    ``#`` comments are ignored. Raises :class:`ConfigError` naming the flag,
    or the file and line, of a value that is not a valid name.
    """
    feeds: list[str] = []
    for flag, values, spec_of in (
        ("--repo", repos, lambda v: v),
        ("--org", orgs, lambda v: f"org:{v}"),
        ("--user", users, lambda v: f"user:{v}"),
    ):
        for value in values:
            path = _parse_feed_spec(spec_of(value.strip()))
            if path is None:
                raise ConfigError(f"{flag} {value!r} is not a valid GitHub name")
            feeds.append(path)

    if watch_file is not None:
        feeds.extend(_read_watch_file(watch_file))
    return tuple(dict.fromkeys(feeds)) or ("events",)


def _read_watch_file(watch_file: Path) -> list[str]:
    try:
        lines = watch_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--watch-file {watch_file}: cannot read it ({exc})") from exc

    feeds = []
    for number, line in enumerate(lines, start=1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        path = _parse_feed_spec(spec)
        if path is None:
            raise ConfigError(
                f"--watch-file {watch_file} line {number}: {spec!r} is not "
                "owner/name, org:NAME or user:LOGIN"
            )
        feeds.append(path)
    if not feeds:
        raise ConfigError(f"--watch-file {watch_file} lists no repository, org or user")
    return feeds


def _split_tokens(text: str) -> tuple[str, ...]:
    tokens: list[str] = []
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            tokens.extend(part.strip() for part in line.split(","))
    return tuple(token for token in tokens if token)


def load_tokens(token_file: Path | None) -> tuple[str, ...]:
    """GitHub tokens from ``--token-file`` if given, else ``GITHUB_TOKEN``; may be empty.

    Either may hold several tokens, comma-separated (the file may also put one
    per line, with ``#`` comment lines). Messages never include a token.
    """
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--token-file {token_file}: cannot read it ({type(exc).__name__})"
            ) from None
        tokens = _split_tokens(text)
        if not tokens:
            raise ConfigError(f"--token-file {token_file} holds no token")
    else:
        tokens = _split_tokens(os.environ.get(TOKEN_ENV, ""))

    for number, token in enumerate(tokens, start=1):
        if any(ch.isspace() or ord(ch) < 33 or ord(ch) > 126 for ch in token):
            source = f"--token-file {token_file}" if token_file else TOKEN_ENV
            raise ConfigError(f"{source}: token {number} contains spaces or unprintable characters")
    return tokens


def parse_link_header(value: str | None) -> dict[str, str]:
    """``{rel: url}`` from a ``Link`` header (RFC 8288 as GitHub writes it)."""
    if not value:
        return {}
    return {rel: url for url, rel in _LINK_RE.findall(value)}


def feed_url(api_url: str, feed: str) -> str:
    """The first page of ``feed``; later pages come from the ``Link`` header."""
    return f"{api_url.rstrip('/')}/{feed.strip('/')}?per_page={PER_PAGE}"


class ReplyKind(Enum):
    """What a reply means to the poller."""

    PAGE = "page"
    NOT_MODIFIED = "not_modified"
    END_OF_WINDOW = "end_of_window"
    """422 "pagination is limited": there is nothing further back."""
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    """5xx, a network error or a body that is not a JSON array: try again later."""
    UNAUTHORIZED = "unauthorized"
    FAILED = "failed"
    """Another 4xx (404 for an unknown repository...): retrying now will not help."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP exchange, classified."""

    kind: ReplyKind
    status: int | None = None
    events: list[Any] = field(default_factory=list)
    etag: str | None = None
    next_url: str | None = None
    poll_interval_s: float | None = None
    rate: RateLimit | None = None
    retry_after_s: float | None = None
    detail: str = ""
    """Why a reply is not a page: the status line or error class, and GitHub's message."""
    invalid_body: bool = False

    @property
    def spent_budget(self) -> bool:
        """Whether GitHub counted this request against the rate limit."""
        return self.status is not None and self.status != 304


class GitHubClient:
    """Sends one GET to the Events API and classifies the reply; owns the httpx client."""

    def __init__(
        self, api_url: str, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._clock = clock
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=REQUEST_TIMEOUT_S,
            follow_redirects=True,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": f"ghstream/{__version__}",
            },
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, url: str, etag: str | None, slot: TokenSlot) -> Reply:
        """GET ``url`` with ``slot``'s token; never raises for HTTP or network trouble."""
        headers = slot.auth_header()
        if etag is not None:
            headers["If-None-Match"] = etag
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            # The message of a transport error names the URL at most, never headers.
            return Reply(ReplyKind.RETRY, detail=f"{type(exc).__name__}: {exc}")
        return self._classify(response)

    def _classify(self, response: httpx.Response) -> Reply:
        headers = response.headers
        now_epoch = server_time(headers, self._clock)
        common: dict[str, Any] = {
            "status": response.status_code,
            "rate": parse_rate_limit(headers, now_epoch),
            "poll_interval_s": _poll_interval(headers),
        }
        status = response.status_code

        if status == 304:
            return Reply(ReplyKind.NOT_MODIFIED, **common)
        if status == 200:
            return self._page(response, common)
        message = _error_message(response)
        detail = f"{status} {response.reason_phrase}: {message}".rstrip(": ")
        if status == 401:
            return Reply(ReplyKind.UNAUTHORIZED, detail=detail, **common)
        if status == 422 and "pagination" in message.lower():
            return Reply(ReplyKind.END_OF_WINDOW, detail=detail, **common)
        if status in (403, 429):
            retry_after = parse_retry_after(headers, now_epoch)
            rate = common["rate"]
            limited = (
                status == 429
                or retry_after is not None
                or (rate is not None and rate.remaining <= 0)
                or "rate limit" in message.lower()
            )
            if limited:
                return Reply(
                    ReplyKind.RATE_LIMITED, retry_after_s=retry_after, detail=detail, **common
                )
        if status >= 500:
            return Reply(ReplyKind.RETRY, detail=detail, **common)
        return Reply(ReplyKind.FAILED, detail=detail, **common)

    @staticmethod
    def _page(response: httpx.Response, common: dict[str, Any]) -> Reply:
        try:
            events = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            detail = f"invalid JSON in a {len(response.content)}-byte page: {exc}"
            return Reply(ReplyKind.RETRY, detail=detail, invalid_body=True, **common)
        if not isinstance(events, list):
            detail = f"a page is a JSON array, not {type(events).__name__}"
            return Reply(ReplyKind.RETRY, detail=detail, invalid_body=True, **common)
        return Reply(
            ReplyKind.PAGE,
            events=events,
            etag=response.headers.get("etag"),
            next_url=parse_link_header(response.headers.get("link")).get("next"),
            **common,
        )


def _poll_interval(headers: httpx.Headers) -> float | None:
    try:
        value = float(headers["x-poll-interval"])
    except (KeyError, ValueError):
        return None
    return value if value > 0 else None


def _error_message(response: httpx.Response) -> str:
    """GitHub's ``message`` from an error body, shortened; empty if there is none."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message[:200] if isinstance(message, str) else ""


async def run_live(
    config: PollerConfig,
    publisher: LivePublisher,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LiveSummary:
    """Poll the configured feeds and publish new events until ``stop`` is set.

    With ``config.once``, poll every feed once and return. Whatever GitHub
    returned and the poller handed to ``publisher`` is flushed before this
    returns, also when ``stop`` ends the run. Raises
    :class:`~ghstream.errors.GitHubAuthError` when GitHub rejects a token.
    """
    # Imported here because the engine imports this module for its types.
    from ghstream.poller import EventsPoller

    poller = EventsPoller(
        config, publisher, stop, clock=clock or SystemClock(), transport=transport
    )
    return await poller.run()
