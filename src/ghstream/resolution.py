"""Time to resolution of one issue or pull request: a small state machine over its events.

An item is identified by its repository (``repo_key``), its number and its
kind (``issue`` for IssuesEvents, ``pull_request`` for PullRequestEvents).
Its events are replayed in time order:

* ``opened`` gives the open time (the first one counts; it never undoes a close);
* ``reopened`` marks it open again and forgets the earlier close;
* ``closed`` marks it closed at the ``closed_at`` its payload carries (else
  the event's time), merged or not as the payload says.

Events of the same second are taken in the order opened, reopened, others,
closed (then by id): an item opened and closed within a second is closed.
Other actions (``edited``, ``labeled``...) change no state. The start is the
item's own ``created_at`` when any of its payloads carries it (so a close
event alone is enough), else the time of its first ``opened`` event. A closed
item whose start is unknown, a pull request closed with no word on whether it
was merged (trimmed 2025+ payloads), or one closed before it was opened, is
*undetermined*: left out of the statistics and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

ItemKind = Literal["issue", "pull_request"]


class Outcome(StrEnum):
    """What became of an item, as far as its stored events tell."""

    OPEN = "open"
    ISSUE = "issue"
    """An issue, closed."""
    PR_MERGED = "pr_merged"
    PR_UNMERGED = "pr_unmerged"
    """A pull request closed without being merged."""
    UNDETERMINED = "undetermined"


_ACTION_ORDER = {"opened": 0, "reopened": 1, "closed": 3}

#: Outcomes whose durations the statistics use.
RESOLVED = (Outcome.ISSUE, Outcome.PR_MERGED, Outcome.PR_UNMERGED)


@dataclass(frozen=True, slots=True)
class ItemEvent:
    """The facts of one IssuesEvent or PullRequestEvent that the state machine reads."""

    event_id: str
    created_at: datetime
    action: str | None
    item_created_at: datetime | None = None
    item_closed_at: datetime | None = None
    merged: bool | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The replayed state of one item."""

    outcome: Outcome
    opened_at: datetime | None
    closed_at: datetime | None
    seconds: float | None
    """Time from start to final close, for resolved outcomes only."""
    reason: str | None = None
    """Why an item is undetermined."""


def resolve(kind: ItemKind, events: Iterable[ItemEvent]) -> Resolution:
    """Replay ``events`` of one item (any order) and say how and when it was resolved."""
    ordered = sorted(
        events, key=lambda e: (e.created_at, _ACTION_ORDER.get(e.action or "", 2), e.event_id)
    )
    first_open: datetime | None = None
    own_created: datetime | None = None
    closed_at: datetime | None = None
    merged: bool | None = None
    is_closed = False

    for event in ordered:
        if event.item_created_at is not None:
            own_created = min(own_created or event.item_created_at, event.item_created_at)
        if event.action == "opened":
            first_open = first_open or event.created_at
        elif event.action == "reopened":
            is_closed, closed_at, merged = False, None, None
        elif event.action == "closed":
            is_closed = True
            closed_at = event.item_closed_at or event.created_at
            merged = event.merged

    start = own_created or first_open
    if not is_closed:
        return Resolution(Outcome.OPEN, start, None, None)
    return _closed(kind, start, closed_at, merged)


def _closed(
    kind: ItemKind, start: datetime | None, closed_at: datetime | None, merged: bool | None
) -> Resolution:
    if start is None:
        return Resolution(Outcome.UNDETERMINED, None, closed_at, None, "no open time")
    assert closed_at is not None  # set by every close
    if closed_at < start:
        return Resolution(Outcome.UNDETERMINED, start, closed_at, None, "closed before opened")

    if kind == "issue":
        outcome = Outcome.ISSUE
    elif merged is None:
        return Resolution(Outcome.UNDETERMINED, start, closed_at, None, "merge unknown")
    else:
        outcome = Outcome.PR_MERGED if merged else Outcome.PR_UNMERGED
    return Resolution(outcome, start, closed_at, (closed_at - start).total_seconds())
