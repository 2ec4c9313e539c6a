"""`top`'s numbers on real recorded hours equal counts made here, from the raw files.

Each GH Archive hour (and the Events API recordings, deduplicated) is stored
the way the pipeline stores it (``normalize`` + ``PostgresSink``), aggregated
with ``run_aggregate``, and read back through ``ghstream.queries`` as the
``--json`` output. The expected values are computed in this file with plain
JSON parsing, under the analytics definitions of README.md; ghstream's model is
not used for them.

Rankings are compared in full, ties included: count descending, then name in
code-point order (then repository key), the order documented for ``top``.
"""

from __future__ import annotations

import gzip
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from ghstream import queries, render
from ghstream.analytics import run_aggregate
from ghstream.model import InvalidEvent, normalize
from ghstream.sinks.postgres import PostgresSink, apply_migrations
from ghstream.timewindow import Window

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

HOURS = ("2012-02-15-0", "2013-02-15-0", "2015-01-01-12")
API_FILES = (
    "new_format_2026/torvalds_events_2026-05-01_03.json",
    "simdjson/github_events.json",
    "user_events_2024/events__7f637123.json",
    "user_events_2024/events__8c8988b2.json",
    "user_events_2025/isodal-public-events.json",
    "user_events_2025/ruvnet-public-events.json",
    "pygithub/pygithub.normalized.json",
    "github3.py/github3py.normalized.json",
    "octokit.rb/octokit_rb.normalized.json",
)
CONTRIBUTION_TYPES = {
    "PushEvent",
    "PullRequestReviewEvent",
    "PullRequestReviewCommentEvent",
    "IssueCommentEvent",
    "CommitCommentEvent",
}

# --- loading through the pipeline's own code -------------------------------------------


async def store(dsn: str, raws: Iterable[dict[str, Any]], *, batch: int = 2000) -> int:
    """Store raw events as the consumer does (normalize, then the PostgreSQL sink)."""
    await apply_migrations(dsn)
    events = []
    for raw in raws:
        try:
            events.append(normalize(raw))
        except InvalidEvent:
            continue
    async with PostgresSink(dsn) as sink:
        for start in range(0, len(events), batch):
            await sink.write_batch(events[start : start + batch])
    return len(events)


async def aggregate(dsn: str, *, full: bool = False) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await run_aggregate(conn, full=full)
    finally:
        await conn.close()


# --- reading the raw files --------------------------------------------------------------


def read_hour(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def read_api_recordings(root: Path) -> list[dict[str, Any]]:
    """Every event object in the recordings, once (by id, else by content)."""
    found: dict[str, dict[str, Any]] = {}
    for name in API_FILES:
        data = json.loads((root / "events_api" / name).read_text(encoding="utf-8"))
        for item in data:
            bodies = [item["response"]["body"]] if "response" in item else [[item]]
            for body in bodies:
                if not isinstance(body, list):
                    continue  # non-event lookups recorded in the same cassettes
                for raw in body:
                    if isinstance(raw, dict) and "type" in raw and "created_at" in raw:
                        key = str(raw.get("id") or json.dumps(raw, sort_keys=True))
                        found.setdefault(key, raw)
    return list(found.values())


def when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = datetime.strptime(value, "%Y/%m/%d %H:%M:%S %z")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Raw:
    """The few facts of one raw event that the definitions need."""

    id: str
    type: str
    created: datetime
    login: str | None
    key: str | None
    name: str | None
    action: str | None
    commits: int | None
    number: int | None
    item_created: datetime | None
    item_closed: datetime | None
    merged: bool | None


def repo_of(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    repo = raw.get("repo")
    if isinstance(repo, dict):
        name = repo.get("name") or None
        if name is not None and "/" not in name.strip("/"):
            name = None
        repo_id = count(repo.get("id"))
        return (str(repo_id) if repo_id is not None else name), name
    repository = raw.get("repository")
    if isinstance(repository, dict):
        owner = repository.get("owner")
        owner = owner.get("login") if isinstance(owner, dict) else owner
        owner = owner or repository.get("organization")
        name = f"{owner}/{repository['name']}" if owner and repository.get("name") else None
        repo_id = count(repository.get("id"))
        return (str(repo_id) if repo_id is not None else name), name
    return None, None


def push_commits(payload: dict[str, Any]) -> int | None:
    for field in ("distinct_size", "size"):
        if count(payload.get(field)) is not None:
            return count(payload.get(field))
    listed = payload.get("commits")
    listed = listed if isinstance(listed, list) else payload.get("shas")
    return len(listed) if isinstance(listed, list) else None


def item_facts(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind == "IssuesEvent":
        issue = payload.get("issue")
        issue = issue if isinstance(issue, dict) else {}
        return {
            "number": count(issue.get("number")) or count(payload.get("number")),
            "item_created": when(issue.get("created_at")),
            "item_closed": when(issue.get("closed_at")),
            "merged": None,
        }
    pr = payload.get("pull_request")
    pr = pr if isinstance(pr, dict) else {}
    merged = pr.get("merged") if isinstance(pr.get("merged"), bool) else None
    if merged is None and when(pr.get("merged_at")) is not None:
        merged = True
    elif merged is None and "merged_at" in pr and when(pr.get("closed_at")) is not None:
        merged = False
    return {
        "number": count(payload.get("number")) or count(pr.get("number")),
        "item_created": when(pr.get("created_at")),
        "item_closed": when(pr.get("closed_at")),
        "merged": merged,
    }


def parse(raw: dict[str, Any]) -> Raw:
    actor = raw.get("actor")
    login = actor.get("login") if isinstance(actor, dict) else actor
    key, name = repo_of(raw)
    payload = raw.get("payload") if isinstance(raw.get("payload"), dict) else {}
    kind = raw["type"]
    facts: dict[str, Any] = {"number": None, "item_created": None}
    facts.update(item_closed=None, merged=None)
    if kind in ("IssuesEvent", "PullRequestEvent"):
        facts = item_facts(kind, payload)
    return Raw(
        id=str(raw.get("id") or json.dumps(raw, sort_keys=True)),
        type=kind,
        created=when(raw["created_at"]),  # type: ignore[arg-type]
        login=login or None,
        key=key,
        name=name,
        action=payload.get("action") if isinstance(payload.get("action"), str) else None,
        commits=push_commits(payload) if kind == "PushEvent" else None,
        **facts,
    )


def is_contribution(event: Raw) -> bool:
    if event.type in CONTRIBUTION_TYPES:
        return True
    return event.type in ("PullRequestEvent", "IssuesEvent") and event.action == "opened"


# --- expected values under the definitions ----------------------------------------------


def newest_names(events: Sequence[Raw]) -> dict[str, str]:
    best: dict[str, tuple[datetime, str]] = {}
    for event in events:
        if event.key is not None and event.name is not None:
            seen = (event.created, event.name)
            best[event.key] = max(best.get(event.key, seen), seen)
    return {key: name for key, (_, name) in best.items()}


def expected_contributors(events: Sequence[Raw], limit: int = 10) -> list[tuple[Any, ...]]:
    per: dict[str, Counter[str]] = defaultdict(Counter)
    repos: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.login is None or e.login.lower().endswith("[bot]") or e.login.lower() == "ghost":
            continue
        row = per[e.login]
        if e.type == "PushEvent":
            row["pushes"] += 1
            row["commits"] += e.commits or 0
            row["pushes_unknown"] += e.commits is None
        if is_contribution(e):
            row["contributions"] += 1
            if e.key is not None:
                repos[e.login].add(e.key)
    ranked = sorted(
        (
            (login, c["contributions"], c["pushes"], c["commits"], c["pushes_unknown"])
            for login, c in per.items()
            if c["contributions"] > 0
        ),
        key=lambda row: (-row[1], row[0]),
    )[:limit]
    return [(*row, len(repos[row[0]])) for row in ranked]


def repo_totals(events: Sequence[Raw]) -> dict[str, Counter[str]]:
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if e.key is None:
            continue
        per[e.key]["events"] += 1
        if e.type == "PushEvent":
            per[e.key]["pushes"] += 1
            per[e.key]["commits"] += e.commits or 0
            per[e.key]["pushes_unknown"] += e.commits is None
    return per


def expected_repos(events: Sequence[Raw], by: str, limit: int = 10) -> list[tuple[Any, ...]]:
    names = newest_names(events)
    actors: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.key is not None and e.login is not None:
            actors[e.key].add(e.login)
    rows = [
        (names.get(key, key), key, c)
        for key, c in repo_totals(events).items()
        if (c["pushes"] > 0 if by == "commits" else c["events"] > 0)
    ]
    rows.sort(key=lambda row: (-row[2][by], row[0], row[1]))
    return [
        (name, c["events"], len(actors[key]), c["commits"], c["pushes"], c["pushes_unknown"])
        for name, key, c in rows[:limit]
    ]


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_resolution(
    events: Sequence[Raw], window: Window
) -> tuple[dict[str, tuple[int, float, float]], int]:
    """Per kind: (items, median, p90) of items closed in ``window``; and the undetermined."""
    items: dict[tuple[str, int, str], list[Raw]] = defaultdict(list)
    for e in events:
        if e.type in ("IssuesEvent", "PullRequestEvent") and e.key and e.number:
            items[(e.key, e.number, e.type)].append(e)

    durations: dict[str, list[float]] = defaultdict(list)
    undetermined = 0
    for (_, _, kind), history in items.items():
        rank = {"opened": 0, "reopened": 1, "closed": 3}
        history.sort(key=lambda e: (e.created, rank.get(e.action or "", 2), e.id))
        created = [e.item_created for e in history if e.item_created is not None]
        first_open = next((e.created for e in history if e.action == "opened"), None)
        closing: Raw | None = None
        for e in history:
            if e.action == "closed":
                closing = e
            elif e.action == "reopened":
                closing = None
        if closing is None:
            continue
        closed_at = closing.item_closed or closing.created
        if not window.start <= closed_at < window.end:
            continue
        start = min(created) if created else first_open
        if start is None or closed_at < start:
            undetermined += 1
        elif kind == "IssuesEvent":
            durations["issue"].append((closed_at - start).total_seconds())
        elif closing.merged is None:
            undetermined += 1
        else:
            outcome = "pr_merged" if closing.merged else "pr_unmerged"
            durations[outcome].append((closed_at - start).total_seconds())
    stats = {
        kind: (len(values), statistics.median(values), percentile(values, 0.9))
        for kind, values in durations.items()
    }
    return stats, undetermined


# --- the test ----------------------------------------------------------------------------


def covering(events: Sequence[Raw]) -> Window:
    start = min(e.created for e in events).replace(minute=0, second=0, microsecond=0)
    end = max(e.created for e in events).replace(minute=0, second=0, microsecond=0)
    return Window(start=start, end=end + timedelta(hours=1))


def raw_events(shared_data: Path, source: str) -> list[dict[str, Any]]:
    if source == "events-api":
        return read_api_recordings(shared_data)
    return read_hour(shared_data / "gharchive" / f"{source}.json.gz")


def json_rows(report: queries.Report[Any]) -> list[dict[str, Any]]:
    """The rows as ``--json`` prints them, checked against the documented fields."""
    data = orjson.loads(orjson.dumps(render.to_json(report)))
    assert set(data) == {"version", "view", "coverage", "rows"}
    for row in data["rows"]:
        assert list(row) == render.row_fields(report.view)
    rows: list[dict[str, Any]] = data["rows"]
    return rows


@pytest.mark.parametrize("source", [*HOURS, "events-api"])
async def test_every_view_matches_the_raw_file(
    postgres_dsn: str, shared_data: Path, source: str
) -> None:
    raws = raw_events(shared_data, source)
    events = [parse(raw) for raw in raws]
    by_id = {e.id: e for e in events}  # the recordings repeat a few events
    events = list(by_id.values())
    await store(postgres_dsn, raws)
    await aggregate(postgres_dsn)
    window = covering(events)

    conn = await asyncpg.connect(postgres_dsn)
    try:
        contributors = await queries.top_contributors(conn, window, limit=10)
        repos = await queries.top_repos(conn, window, limit=10)
        commits = await queries.top_repos(conn, window, limit=10, by="commits")
        types = await queries.event_types(conn, window)
        minutes = await queries.frequency(conn, window, per="minute")
        resolution = await queries.resolution(conn, window, limit=10)
    finally:
        await conn.close()

    assert [
        (r["login"], r["contributions"], r["pushes"], r["commits"], r["pushes_unknown"], r["repos"])
        for r in json_rows(contributors)
    ] == expected_contributors(events)

    repo_fields = ("repo", "events", "actors", "commits", "pushes", "pushes_unknown")
    assert [tuple(r[f] for f in repo_fields) for r in json_rows(repos)] == expected_repos(
        events, "events"
    )
    assert [tuple(r[f] for f in repo_fields) for r in json_rows(commits)] == expected_repos(
        events, "commits"
    )

    type_counts = Counter(e.type for e in events)
    assert {r["type"]: r["events"] for r in json_rows(types)} == dict(type_counts)
    assert types.coverage.events == len(events)

    per_minute = Counter(
        (e.created.replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z"), e.type)
        for e in events
    )
    assert {(r["bucket"], r["type"]): r["events"] for r in json_rows(minutes)} == per_minute

    stats, undetermined = expected_resolution(events, window)
    overall = {r["kind"]: r for r in json_rows(resolution) if r["repo"] is None}
    assert set(overall) == set(stats)
    for kind, (items, median, p90) in stats.items():
        assert overall[kind]["items"] == items
        assert overall[kind]["median_seconds"] == pytest.approx(median)
        assert overall[kind]["p90_seconds"] == pytest.approx(p90)
    assert resolution.coverage.undetermined_items == undetermined
