from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ghstream.resolution import ItemEvent, Outcome, resolve

T0 = datetime(2015, 1, 1, 12, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_open_then_close_issue() -> None:
    result = resolve(
        "issue",
        [ItemEvent("2", at(90), "closed"), ItemEvent("1", at(0), "opened")],
    )

    assert result.outcome is Outcome.ISSUE
    assert result.opened_at == at(0)
    assert result.closed_at == at(90)
    assert result.seconds == 90 * 60


def test_reopened_pull_request_runs_from_first_open_to_final_close() -> None:
    """Opened at 0, closed unmerged at 10, reopened at 20, merged at 60: 60 minutes, merged."""
    events = [
        ItemEvent("1", at(0), "opened"),
        ItemEvent("2", at(10), "closed", merged=False),
        ItemEvent("3", at(20), "reopened"),
        ItemEvent("4", at(60), "closed", merged=True),
    ]

    result = resolve("pull_request", events)

    assert result.outcome is Outcome.PR_MERGED
    assert result.seconds == 60 * 60


def test_reopened_and_not_closed_again_is_open() -> None:
    events = [
        ItemEvent("1", at(0), "opened"),
        ItemEvent("2", at(10), "closed", merged=False),
        ItemEvent("3", at(20), "reopened"),
    ]

    assert resolve("pull_request", events).outcome is Outcome.OPEN


def test_close_without_open_uses_the_payload_times() -> None:
    """The close event alone carries created_at and closed_at: that is enough."""
    close = ItemEvent(
        "9",
        at(100),
        "closed",
        item_created_at=at(-3 * 24 * 60),
        item_closed_at=at(99),
        merged=False,
    )

    result = resolve("pull_request", [close])

    assert result.outcome is Outcome.PR_UNMERGED
    assert result.opened_at == at(-3 * 24 * 60)
    assert result.closed_at == at(99)
    assert result.seconds == (3 * 24 * 60 + 99) * 60


def test_close_without_open_or_payload_times_is_undetermined() -> None:
    result = resolve("issue", [ItemEvent("9", at(5), "closed")])

    assert result.outcome is Outcome.UNDETERMINED
    assert result.reason == "no open time"
    assert result.seconds is None


def test_trimmed_pull_request_close_is_undetermined() -> None:
    """2025+ payloads: the close carries no merge flag, so merged or not is unknown."""
    events = [ItemEvent("1", at(0), "opened"), ItemEvent("2", at(30), "closed")]

    result = resolve("pull_request", events)

    assert result.outcome is Outcome.UNDETERMINED
    assert result.reason == "merge unknown"


def test_trimmed_issue_close_with_an_open_event_is_resolved() -> None:
    events = [ItemEvent("1", at(0), "opened"), ItemEvent("2", at(30), "closed")]

    assert resolve("issue", events).seconds == 30 * 60


def test_other_actions_change_no_state_but_may_carry_the_created_time() -> None:
    events = [
        ItemEvent("1", at(5), "labeled", item_created_at=at(1)),
        ItemEvent("2", at(20), "closed"),
    ]

    result = resolve("issue", events)

    assert result.outcome is Outcome.ISSUE
    assert result.seconds == 19 * 60


def test_open_only_is_open() -> None:
    result = resolve("issue", [ItemEvent("1", at(0), "opened")])

    assert result.outcome is Outcome.OPEN
    assert result.closed_at is None


def test_opened_and_closed_in_the_same_second_is_closed() -> None:
    """2013 data has such pairs; the id order must not decide (it is a content hash there)."""
    events = [ItemEvent("a", at(0), "closed"), ItemEvent("b", at(0), "opened")]

    result = resolve("issue", events)

    assert result.outcome is Outcome.ISSUE
    assert result.seconds == 0


def test_a_second_opened_does_not_undo_a_close() -> None:
    events = [
        ItemEvent("1", at(0), "opened"),
        ItemEvent("2", at(5), "closed"),
        ItemEvent("3", at(9), "opened"),
    ]

    assert resolve("issue", events).outcome is Outcome.ISSUE
