"""The core event model against every era of real GitHub events (../shared/data) and edge cases."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ghstream.model import Event, InvalidEvent, normalize, synthetic_id


def load(shared_data: Path, relative: str) -> Any:
    return json.loads((shared_data / relative).read_text(encoding="utf-8"))


def fixture(shared_data: Path, year: int, event_type: str) -> dict[str, Any]:
    data: dict[str, Any] = load(
        shared_data, f"gharchive/fixtures_by_type/{year}/{event_type}_raw.json"
    )
    return data


# -- eras, from the recorded data ------------------------------------------------------------


@pytest.mark.shared_data
class TestEras:
    def test_2012_push_has_no_distinct_size(self, shared_data: Path) -> None:
        """2012 GH Archive pushes carry size and commits but no distinct_size: unknown, not 0."""
        event = normalize(fixture(shared_data, 2012, "PushEvent"))
        assert event.id == "1519871544"
        assert event.created_at == datetime(2012, 2, 15, 0, 0, tzinfo=UTC)
        assert (event.actor_login, event.actor_id) == ("propercursive", 636287)
        assert (event.repo_name, event.repo_id) == ("molteam/tfateams", 2654762)
        assert event.push_size == 1
        assert event.push_distinct_size is None
        assert event.push_commits_listed == 1
        assert event.commits == 1
        assert not event.synthetic_id

    def test_2012_events_about_no_repository(self, shared_data: Path) -> None:
        """GistEvent/FollowEvent of 2012 have repo name "/" and id null: no repository."""
        gist = normalize(fixture(shared_data, 2012, "GistEvent"))
        assert gist.repo_name is None
        assert gist.repo_id is None
        assert gist.repo_key is None
        assert gist.action == "update"

    def test_2013_timeline_push(self, shared_data: Path) -> None:
        """Timeline era: no id, actor a login string, repository{}, -08:00 offsets, shas."""
        raw = fixture(shared_data, 2013, "PushEvent")
        event = normalize(raw)
        assert event.synthetic_id
        assert event.id == synthetic_id(raw)
        assert event.created_at == datetime(2013, 2, 15, 8, 0, 39, tzinfo=UTC)
        assert event.created_at.utcoffset() is not None
        assert event.actor_login == "bcomdlc"
        assert event.repo_name == "bcomdlc/bcom-homepage-archive"
        assert event.repo_id == 3527704
        assert event.push_size == 3
        assert event.push_commits_listed == 3

    def test_2013_timeline_pull_request_times(self, shared_data: Path) -> None:
        event = normalize(fixture(shared_data, 2013, "PullRequestEvent"))
        assert (event.action, event.number, event.merged) == ("closed", 6, True)
        assert event.item_created_at == datetime(2013, 2, 15, 7, 47, 15, tzinfo=UTC)
        assert event.item_merged_at == datetime(2013, 2, 15, 8, 0, 38, tzinfo=UTC)

    def test_2013_timeline_comment_number_comes_from_the_url(self, shared_data: Path) -> None:
        """Timeline comments hold only issue_id/comment_id; the html url has the number."""
        event = normalize(fixture(shared_data, 2013, "IssueCommentEvent"))
        raw_url = fixture(shared_data, 2013, "IssueCommentEvent")["url"]
        assert event.number is not None
        assert f"/issues/{event.number}#" in raw_url or f"/pull/{event.number}#" in raw_url

    def test_2013_timeline_fork_names_the_new_fork(self, shared_data: Path) -> None:
        """Timeline ForkEvent payloads are {}: the fork is the event's url."""
        raw = fixture(shared_data, 2013, "ForkEvent")
        event = normalize(raw)
        assert raw["payload"] == {}
        assert event.forkee is not None
        assert raw["url"].endswith(event.forkee)
        assert event.forkee != event.repo_name

    def test_2013_synthetic_id_is_the_same_in_the_hour_and_the_fixture(
        self, shared_data: Path
    ) -> None:
        """The fixture is the hour's event re-serialized (pretty, sorted keys): same id."""
        fixture_id = normalize(fixture(shared_data, 2013, "PushEvent")).id
        with gzip.open(shared_data / "gharchive/2013-02-15-0.json.gz", "rt") as lines:
            ids = {normalize(json.loads(line)).id for line in lines}
        assert fixture_id in ids

    def test_2015_pull_request_merged(self, shared_data: Path) -> None:
        event = normalize(fixture(shared_data, 2015, "PullRequestEvent"))
        assert event.id == "2582217087"
        assert event.org == "reciprocity"
        assert (event.action, event.number, event.merged) == ("closed", 2378, True)
        assert event.item_closed_at == datetime(2015, 2, 15, 0, 0, 1, tzinfo=UTC)

    def test_2015_push_counts(self, shared_data: Path) -> None:
        event = normalize(fixture(shared_data, 2015, "PushEvent"))
        assert (event.push_size, event.push_distinct_size, event.push_commits_listed) == (1, 1, 1)

    def test_2024_review_and_pull_request(self, shared_data: Path) -> None:
        page = load(shared_data, "events_api/user_events_2024/events__8c8988b2.json")
        reviews = [normalize(e) for e in page if e["type"] == "PullRequestReviewEvent"]
        assert reviews
        assert all(r.number is not None and r.is_pull_request for r in reviews)
        assert {r.review_state for r in reviews} <= {"approved", "commented", "changes_requested"}
        pr = next(normalize(e) for e in page if e["type"] == "PullRequestEvent")
        assert pr.repo_name == "feature-engine/feature_engine"
        assert pr.number == 820

    def test_2026_trimmed_push_has_unknown_counts(self, shared_data: Path) -> None:
        """Since 2025-10-07 a PushEvent payload has no size, distinct_size or commits."""
        page = load(shared_data, "events_api/new_format_2026/torvalds_events_2026-05-01_03.json")
        events = [normalize(e) for e in page]
        assert len(events) == 9
        for event in events:
            assert event.type == "PushEvent"
            assert event.repo_name == "torvalds/linux"
            assert event.repo_id == 2325298
            assert event.push_size is None
            assert event.push_distinct_size is None
            assert event.push_commits_listed is None
            assert event.commits is None

    def test_private_events_are_marked(self, shared_data: Path) -> None:
        bodies = load(shared_data, "events_api/pygithub/pygithub.normalized.json")
        private = [
            normalize(e)
            for exchange in bodies
            if isinstance(exchange["response"]["body"], list)
            for e in exchange["response"]["body"]
            if e.get("public") is False
        ]
        assert private
        assert all(not e.public for e in private)


# -- shapes written here -----------------------------------------------------------------


def test_trimmed_2025_pull_request() -> None:
    """Since 2025-10-07 the pull request object has only id, number, url, base, head."""
    raw = {
        "id": "52000000001",
        "type": "PullRequestEvent",
        "actor": {"id": 1, "login": "someone"},
        "repo": {"id": 99, "name": "o/r"},
        "payload": {
            "action": "closed",
            "number": 5,
            "pull_request": {"id": 7, "number": 5, "url": "u", "base": {}, "head": {}},
        },
        "created_at": "2026-01-02T03:04:05Z",
    }
    event = normalize(raw)
    assert (event.action, event.number) == ("closed", 5)
    assert event.merged is None, "unknown, not False"
    assert event.item_created_at is None
    assert event.item_closed_at is None


def test_unknown_types_are_kept() -> None:
    event = normalize({"type": "BrandNewEvent", "created_at": "2030-01-01T00:00:00Z"})
    assert event.type == "BrandNewEvent"
    assert event.synthetic_id


def test_synthetic_id_ignores_key_order() -> None:
    one = {"type": "WatchEvent", "created_at": "2013-01-01T00:00:00-08:00", "actor": "a"}
    two = dict(reversed(list(one.items())))
    assert list(one) != list(two)
    assert normalize(one).id == normalize(two).id
    assert normalize(one).id != normalize({**one, "actor": "b"}).id


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"created_at": "2015-01-01T00:00:00Z"}, id="no-type"),
        pytest.param({"type": "PushEvent"}, id="no-created-at"),
        pytest.param({"type": "PushEvent", "created_at": "yesterday"}, id="bad-created-at"),
        pytest.param({"type": "", "created_at": "2015-01-01T00:00:00Z"}, id="empty-type"),
    ],
)
def test_invalid_events(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        normalize(raw)


def test_not_an_object_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        normalize([1, 2])  # type: ignore[arg-type]


def test_dict_round_trip() -> None:
    event = normalize(
        {
            "id": "1",
            "type": "IssuesEvent",
            "actor": {"id": 3, "login": "renovate[bot]"},
            "repo": {"id": 5, "name": "o/r"},
            "payload": {
                "action": "closed",
                "issue": {"number": 9, "closed_at": "2020-01-01T00:00:00Z"},
            },
            "created_at": "2020-01-01T00:00:01Z",
        }
    )
    assert event.actor_is_bot
    assert Event.from_dict(event.to_dict()) == event
