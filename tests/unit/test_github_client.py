"""The Events API edge: feed and token configuration, Link parsing, and reply classification.

Classification is checked against every recorded Events API page in
``../shared/data/events_api`` and, for replies no recording holds (304, 422,
401, limits, broken bodies), against hand-written replies through
``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakegithub import FakeClock
from ghstream.errors import ConfigError
from ghstream.github import GitHubClient as Client
from ghstream.github import (
    PollerConfig,
    Reply,
    ReplyKind,
    feed_url,
    feeds_from_args,
    load_tokens,
    parse_link_header,
)
from ghstream.ratelimit import TokenSlot

SECRET = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0" * 2

# -- feeds ----------------------------------------------------------------------------------


def test_no_feed_given_means_the_public_feed() -> None:
    assert feeds_from_args([], [], [], None) == ("events",)


def test_repos_orgs_and_users_become_api_paths_in_order_without_repeats() -> None:
    feeds = feeds_from_args(["torvalds/linux", "a-b/c.d_e"], ["github"], ["octocat"], None)
    assert feeds == (
        "repos/torvalds/linux/events",
        "repos/a-b/c.d_e/events",
        "orgs/github/events",
        "users/octocat/events",
    )
    assert feeds_from_args(["x/y", "x/y"], [], [], None) == ("repos/x/y/events",)


@pytest.mark.parametrize(
    ("repos", "orgs", "users", "flag"),
    [
        pytest.param(["linux"], [], [], "--repo", id="repo-without-owner"),
        pytest.param(["a/b/c"], [], [], "--repo", id="repo-with-extra-part"),
        pytest.param([], ["bad org"], [], "--org", id="org-with-space"),
        pytest.param([], [], ["-dash"], "--user", id="user-leading-dash"),
    ],
)
def test_an_invalid_name_names_its_flag(
    repos: list[str], orgs: list[str], users: list[str], flag: str
) -> None:
    with pytest.raises(ConfigError, match=flag):
        feeds_from_args(repos, orgs, users, None)


def test_a_watch_file_takes_repos_orgs_users_comments_and_blank_lines(tmp_path: Path) -> None:
    watch = tmp_path / "watch.txt"
    watch.write_text(
        "# what we follow\n\ntorvalds/linux\norg:github   # the org\nuser:octocat\n\n",
        encoding="utf-8",
    )
    assert feeds_from_args(["torvalds/linux"], [], [], watch) == (
        "repos/torvalds/linux/events",
        "orgs/github/events",
        "users/octocat/events",
    )


def test_a_bad_watch_file_line_is_named(tmp_path: Path) -> None:
    watch = tmp_path / "watch.txt"
    watch.write_text("torvalds/linux\n\nteam:core\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"watch\.txt line 3: 'team:core'"):
        feeds_from_args([], [], [], watch)


def test_a_missing_or_empty_watch_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--watch-file .*cannot read"):
        feeds_from_args([], [], [], tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="lists no repository"):
        feeds_from_args([], [], [], empty)


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_come_from_the_environment_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", f" {SECRET} , other_token ,")
    assert load_tokens(None) == (SECRET, "other_token")
    monkeypatch.delenv("GITHUB_TOKEN")
    assert load_tokens(None) == ()


def test_a_token_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "from_env")
    path = tmp_path / "tokens"
    path.write_text(f"# ci tokens\n{SECRET}\ntwo,three\n", encoding="utf-8")
    assert load_tokens(path) == (SECRET, "two", "three")


def test_token_errors_name_the_source_and_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"--token-file .*cannot read") as missing:
        load_tokens(tmp_path / "absent")
    assert "absent" in str(missing.value)

    empty = tmp_path / "empty"
    empty.write_text("\n# none\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no token"):
        load_tokens(empty)

    monkeypatch.setenv("GITHUB_TOKEN", f"ok_token,{SECRET}\x07")
    with pytest.raises(ConfigError, match="GITHUB_TOKEN: token 2") as bad:
        load_tokens(None)
    assert SECRET not in str(bad.value)


def test_config_and_slots_never_show_a_token() -> None:
    config = PollerConfig(tokens=(SECRET,))
    slot = TokenSlot(0, SECRET, 1)
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in repr(slot) and slot.label == "token 1 of 1"
    assert TokenSlot(0, None, 0).auth_header() == {}


# -- Link headers ---------------------------------------------------------------------------


def test_link_header_relations() -> None:
    value = (
        '<https://api.github.com/repositories/3710711/events?per_page=100&page=2>; rel="next", '
        '<https://api.github.com/repositories/3710711/events?per_page=100&page=3>; rel="last"'
    )
    assert parse_link_header(value) == {
        "next": "https://api.github.com/repositories/3710711/events?per_page=100&page=2",
        "last": "https://api.github.com/repositories/3710711/events?per_page=100&page=3",
    }
    assert parse_link_header(None) == {}
    assert parse_link_header('<https://x/events?page=1>; rel="prev"') == {
        "prev": "https://x/events?page=1"
    }


def test_feed_urls_ask_for_full_pages() -> None:
    assert feed_url("https://ghe.example/api/v3/", "orgs/x/events") == (
        "https://ghe.example/api/v3/orgs/x/events?per_page=100"
    )


# -- classifying replies --------------------------------------------------------------------


def recorded_event_pages(shared_data: Path) -> list[dict[str, Any]]:
    exchanges = []
    for name in sorted((shared_data / "events_api").glob("*/*.normalized.json")):
        for exchange in json.loads(name.read_text(encoding="utf-8")):
            url = exchange["request"]["url"]
            if "events" in url and isinstance(exchange["response"].get("body"), list):
                exchanges.append(exchange)
    return exchanges


def replay(exchange: dict[str, Any]) -> httpx.MockTransport:
    """Answer with a recorded response; the recording's body is already decoded."""
    response = exchange["response"]
    skip = {"content-encoding", "content-length", "transfer-encoding", "status"}
    headers = [
        (name, value)
        for name, values in response["headers"].items()
        if name.lower() not in skip
        for value in (values if isinstance(values, list) else [values])
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            response["status"], headers=headers, content=json.dumps(response["body"]).encode()
        )

    return httpx.MockTransport(handler)


@pytest.mark.shared_data
async def test_every_recorded_events_page_is_read_as_github_sent_it(shared_data: Path) -> None:
    """ETags (strong 2012-13, weak since), Link next (numeric-id forms too), poll intervals."""
    exchanges = recorded_event_pages(shared_data)
    assert len(exchanges) >= 30
    etags, nexts = [], []
    for exchange in exchanges:
        headers = {k.lower(): v for k, v in exchange["response"]["headers"].items()}
        client = Client("https://api.github.com", FakeClock(), replay(exchange))
        try:
            reply = await client.get(exchange["request"]["url"], None, TokenSlot(0, None, 0))
        finally:
            await client.aclose()

        # httpx's own Link parser is the independent reference.
        links = httpx.Response(200, headers={"link": headers.get("link", "")}).links
        assert reply.kind is ReplyKind.PAGE
        assert reply.events == exchange["response"]["body"]
        assert reply.etag == headers.get("etag")
        assert reply.next_url == links.get("next", {}).get("url")
        interval = headers.get("x-poll-interval")
        assert reply.poll_interval_s == (float(interval) if interval else None)
        assert reply.rate is None or reply.rate.remaining == int(headers["x-ratelimit-remaining"])
        etags.append(reply.etag or "")
        nexts.append(reply.next_url or "")
    assert any(etag.startswith('W/"') for etag in etags)
    assert any(etag.startswith('"') for etag in etags)
    assert any("/repositories/" in url for url in nexts)


async def classify(
    status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> Reply:
    content = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(status, headers=headers or {}, content=content)

    client = Client("https://api.github.com", FakeClock(), httpx.MockTransport(handler))
    try:
        return await client.get("https://api.github.com/events", None, TokenSlot(0, None, 0))
    finally:
        await client.aclose()


LIMIT_HEADERS = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1767229200"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        pytest.param(304, None, {}, ReplyKind.NOT_MODIFIED, id="304"),
        pytest.param(
            422,
            {"message": "In order to keep the API fast for everyone, pagination is limited."},
            {},
            ReplyKind.END_OF_WINDOW,
            id="422-pagination",
        ),
        pytest.param(422, {"message": "Validation Failed"}, {}, ReplyKind.FAILED, id="422-other"),
        pytest.param(401, {"message": "Bad credentials"}, {}, ReplyKind.UNAUTHORIZED, id="401"),
        pytest.param(429, {}, {}, ReplyKind.RATE_LIMITED, id="429"),
        pytest.param(403, {}, {"retry-after": "30"}, ReplyKind.RATE_LIMITED, id="403-retry"),
        pytest.param(403, {}, LIMIT_HEADERS, ReplyKind.RATE_LIMITED, id="403-spent"),
        pytest.param(
            403,
            {"message": "You have exceeded a secondary rate limit."},
            {},
            ReplyKind.RATE_LIMITED,
            id="403-secondary",
        ),
        pytest.param(
            403, {"message": "Repository access blocked"}, {}, ReplyKind.FAILED, id="403-blocked"
        ),
        pytest.param(404, {"message": "Not Found"}, {}, ReplyKind.FAILED, id="404"),
        pytest.param(502, None, {}, ReplyKind.RETRY, id="502"),
        pytest.param(200, {"not": "a list"}, {}, ReplyKind.RETRY, id="200-object"),
    ],
)
async def test_replies_are_classified(
    status: int, body: Any, headers: dict[str, str], kind: ReplyKind
) -> None:
    assert (await classify(status, body, headers)).kind is kind


async def test_a_truncated_page_is_an_invalid_body_to_retry() -> None:
    reply = await classify(200, raw=b'[{"id": "1", "type": "Pu')
    assert reply.kind is ReplyKind.RETRY and reply.invalid_body
    assert "invalid JSON" in reply.detail


async def test_retry_after_and_reset_are_read_against_the_server_date() -> None:
    reply = await classify(
        429,
        {},
        {
            "date": "Thu, 01 Jan 2026 00:00:00 GMT",  # 1767225600
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": "1767226500",
            "retry-after": "42",
        },
    )
    assert reply.retry_after_s == 42
    assert reply.rate is not None and reply.rate.reset_in_s == 900


async def test_a_network_error_is_retried_and_its_message_holds_no_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = Client("https://api.github.com", FakeClock(), httpx.MockTransport(handler))
    try:
        reply = await client.get("https://api.github.com/events", '"abc"', TokenSlot(0, SECRET, 1))
    finally:
        await client.aclose()
    assert reply.kind is ReplyKind.RETRY and reply.status is None
    assert "ConnectError" in reply.detail and SECRET not in reply.detail


async def test_requests_carry_the_token_the_etag_and_github_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(304)

    client = Client("https://api.github.com", FakeClock(), httpx.MockTransport(handler))
    try:
        await client.get("https://api.github.com/events", 'W/"abc"', TokenSlot(0, SECRET, 1))
    finally:
        await client.aclose()
    headers = seen[0].headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["if-none-match"] == 'W/"abc"'
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["user-agent"].startswith("ghstream/")
    assert SECRET not in repr(headers)
