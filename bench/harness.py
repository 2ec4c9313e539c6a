"""Measurement and reporting: alternating repetitions, medians, ratios to a peer, one table.

Every stage measures ghstream and its peer in the same run, alternating them
(A B, then B A...) after a warm-up of each, so drift on a shared machine (other
processes, page cache, broker segment rolls) hits both sides alike. A result
is a list of per-repetition values; the ratio to the peer is computed per
repetition pair and summarized as median [min-max], which is its spread.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Measure = Callable[[], float]


@dataclass
class Result:
    """One row of the table: a subject's values over the measured repetitions."""

    stage: str
    subject: str
    unit: str
    values: list[float]
    higher_is_better: bool = True
    peer: Result | None = None
    goal: str = ""
    """Human-readable goal, e.g. ``>= 0.5x kcat``."""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def ratios(self) -> list[float]:
        """Per-pair speed ratio to the peer (>1: ghstream is faster/better)."""
        if self.peer is None:
            return []
        pairs = zip(self.values, self.peer.values, strict=False)
        if self.higher_is_better:
            return [mine / theirs for mine, theirs in pairs if theirs > 0]
        return [theirs / mine for mine, theirs in pairs if mine > 0]

    def ratio(self) -> float | None:
        ratios = self.ratios()
        return statistics.median(ratios) if ratios else None


def log(message: str) -> None:
    """Progress on stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def alternate(
    subjects: Sequence[tuple[str, Measure]], *, reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each subject ``warmup`` times, then ``reps`` measured rounds in alternating order."""
    for round_ in range(warmup):
        for name, measure in subjects:
            log(f"  warm-up {round_ + 1}/{warmup}: {name}")
            measure()
    values: dict[str, list[float]] = {name: [] for name, _ in subjects}
    for rep in range(reps):
        order = list(subjects) if rep % 2 == 0 else list(reversed(subjects))
        for name, measure in order:
            value = measure()
            values[name].append(value)
            log(f"  rep {rep + 1}/{reps}: {name} = {fmt(value)}")
    return values


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _ratio_cell(result: Result) -> str:
    ratios = result.ratios()
    if not ratios or result.peer is None:
        return ""
    peer = result.peer.subject.split(" (")[0]
    return f"{statistics.median(ratios):.2f}x {peer} [{min(ratios):.2f}-{max(ratios):.2f}]"


def table(results: Sequence[Result]) -> str:
    """The results as one Markdown table."""
    header = (
        "| stage | subject | unit | median | min | max | ratio to peer [spread] | goal | met |",
        "|---|---|---|--:|--:|--:|---|---|---|",
    )
    rows = [*header]
    for r in results:
        met = "" if r.met is None else ("yes" if r.met else "**NO**")
        subject = r.subject + (f" ({r.note})" if r.note else "")
        low, high = (min(r.values), max(r.values)) if r.values else (float("nan"),) * 2
        rows.append(
            f"| {r.stage} | {subject} | {r.unit} | {fmt(r.median)} | {fmt(low)} | {fmt(high)} "
            f"| {_ratio_cell(r)} | {r.goal} | {met} |"
        )
    return "\n".join(rows)
