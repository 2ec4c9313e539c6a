"""Time windows for ``ghstream top``: parsing ``--since``/``--until`` and aligning to buckets.

A window is half-open, ``[start, end)``, in UTC. ``--since`` and ``--until``
take ISO 8601 times (a date, or a date and time; no offset means UTC) or a
relative age such as ``90s``, ``15m``, ``1h``, ``7d``, ``2w``, counted back
from now.

Without ``--since`` the window is the 24 hours of *data* that end with the
hour holding the newest stored event: archive data from 2015 is as easy to
look at as a live stream, and the coverage line says which range was chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from ghstream.errors import ConfigError

Granularity = Literal["minute", "hour"]

#: Length of the window chosen when ``--since`` is not given.
DEFAULT_SPAN = timedelta(hours=24)

_STEPS: dict[Granularity, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
}
_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open UTC time range ``[start, end)``."""

    start: datetime
    end: datetime
    defaulted: bool = False
    """True when no ``--since`` was given and the window is the newest 24 h of data."""

    def aligned(self, granularity: Granularity) -> Window:
        """The smallest window of whole buckets that contains this one."""
        step = _STEPS[granularity]
        start = floor_time(self.start, step)
        end = floor_time(self.end, step)
        if end < self.end:
            end += step
        return replace(self, start=start, end=end)

    @property
    def span(self) -> timedelta:
        return self.end - self.start


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``step`` since the Unix epoch (UTC)."""
    elapsed = moment.astimezone(UTC) - _EPOCH
    return _EPOCH + (elapsed // step) * step


def parse_instant(text: str, *, now: datetime, flag: str) -> datetime:
    """An aware UTC datetime from an ISO 8601 time or a relative age like ``7d``.

    ``flag`` names the option in the error message when ``text`` is neither.
    """
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        try:
            return now.astimezone(UTC) - amount * _UNITS[unit]
        except OverflowError:
            raise ConfigError(f"{flag} {text!r} reaches before the year 1") from None
    if text.strip().lower() == "now":
        return now.astimezone(UTC)

    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is neither an ISO 8601 time (2015-01-01T12:00:00Z, 2015-01-01) "
            "nor a relative age (90s, 15m, 1h, 7d, 2w)."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_duration(text: str, *, flag: str) -> timedelta:
    """A positive duration such as ``30s``, ``5m``, ``1h``, ``7d``, ``2w``."""
    relative = _RELATIVE.match(text)
    if relative is None or int(relative.group(1)) == 0:
        raise ConfigError(
            f"{flag} {text!r} is not a positive duration: give a number above 0 and a unit, "
            "like 30s, 5m, 1h or 1d."
        )
    try:
        return int(relative.group(1)) * _UNITS[relative.group(2).lower()]
    except OverflowError:
        raise ConfigError(f"{flag} {text!r} is longer than Python's dates reach") from None


def resolve_window(
    since: str | None,
    until: str | None,
    *,
    now: datetime,
    newest_event: datetime | None,
) -> Window:
    """The window that ``--since``/``--until`` ask for.

    With ``--since``, the window runs from it to ``--until`` (default: now).
    Without it, the window is the 24 h before ``--until``, or, when that is not
    given either, the 24 h ending with the hour that holds ``newest_event``.
    """
    end = parse_instant(until, now=now, flag="--until") if until is not None else None
    if since is not None:
        start = parse_instant(since, now=now, flag="--since")
        window = Window(start=start, end=end if end is not None else now.astimezone(UTC))
    else:
        if end is None:
            reference = newest_event if newest_event is not None else now
            end = floor_time(reference, _STEPS["hour"]) + _STEPS["hour"]
        window = Window(start=end - DEFAULT_SPAN, end=end, defaulted=True)

    if window.start >= window.end:
        raise ConfigError(
            f"--since ({window.start:%Y-%m-%d %H:%M:%S} UTC) must be before "
            f"--until ({window.end:%Y-%m-%d %H:%M:%S} UTC)."
        )
    return window
