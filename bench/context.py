"""What every stage gets: the mode, the repetition counts and the input files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SHARED_HOUR = (
    Path(__file__).resolve().parent.parent.parent / "shared/data/gharchive/2015-01-01-12.json.gz"
)


@dataclass
class Context:
    quick: bool
    reps: int
    warmup: int
    modern_gz: Path
    modern_plain: Path
    modern_events: int
    real_hour: Path = SHARED_HOUR
    small_gz: Path | None = None
    """A tenth of the modern hour (the 1x input of the memory stage)."""
    small_events: int = 0
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    """Peak RSS of subprocesses other stages ran, by role (``ingest``, ``consume``)."""
