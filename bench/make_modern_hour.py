"""Build a modern-size GH Archive hour (about 150,000 events) from the real 2015 hour.

GH Archive hours of the 2020s hold 150,000 to 250,000 events; the hours in
``../shared/data/gharchive`` hold 4,000 to 8,000. This script makes a busy
modern hour out of the real 2015-01-01-12 hour, so every byte of every event is
something GitHub really produced:

* the hour's 8,273 events are replicated (copy ``k`` = 0, 1, 2...) until the
  requested count is reached; the last copy is partial (the file's first events);
* every event gets a fresh unique id (``40000000000`` + its position), so no two
  events collide and nothing is deduplicated away downstream;
* copy ``k > 0`` is a different population of actors and repositories: logins and
  repository names get a ``-cK`` suffix (before ``[bot]``), ids get ``K * 10**9``
  added, so per-repository and per-actor aggregates see a modern hour's
  cardinality instead of 18 times the same keys;
* timestamps move into one hour of a recent day (``--hour``, default
  2025-06-03T14): copy ``k`` is offset by ``k * 3600 / copies`` seconds, wrapping
  within the hour, and every nested ``*_at`` time of the event (pull request,
  issue, comment...) moves by the same amount, so durations stay real;
* the events are written in time order, one compact JSON object per line, as
  GH Archive does, to ``bench/data/modern-<N>.json.gz`` and (for kcat, which
  reads plain lines) ``bench/data/modern-<N>.ndjson``.

The type mix, payload sizes and per-repository skew are the real hour's.
``bench/data/`` is in .gitignore; the files are rebuilt when missing.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "gharchive" / "2015-01-01-12.json.gz"
DATA_DIR = ROOT / "bench" / "data"
DEFAULT_EVENTS = 150_000
DEFAULT_HOUR = "2025-06-03T14"
ID_BASE = 40_000_000_000
ID_STRIDE = 1_000_000_000

_TIME = re.compile(rb'"(\w+_at)":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"')


def paths(events: int, data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """The ``.json.gz`` and ``.ndjson`` files of a modern hour of ``events`` events."""
    return data_dir / f"modern-{events}.json.gz", data_dir / f"modern-{events}.ndjson"


def _suffix_login(login: str, copy: int) -> str:
    if login.endswith("[bot]"):
        return f"{login[:-5]}-c{copy}[bot]"
    return f"{login}-c{copy}"


def _rename(obj: dict[str, object], copy: int) -> None:
    """Make copy ``copy`` of an event a different actor and repository population."""
    actor = obj.get("actor")
    if isinstance(actor, dict):
        if isinstance(actor.get("login"), str):
            actor["login"] = _suffix_login(actor["login"], copy)
        if isinstance(actor.get("id"), int):
            actor["id"] += copy * ID_STRIDE
    repo = obj.get("repo")
    if isinstance(repo, dict):
        if isinstance(repo.get("name"), str):
            repo["name"] = f"{repo['name']}-c{copy}"
        if isinstance(repo.get("id"), int):
            repo["id"] += copy * ID_STRIDE


def _shift_times(line: bytes, delta: timedelta) -> bytes:
    def shift(match: re.Match[bytes]) -> bytes:
        moment = datetime.strptime(match.group(2).decode(), "%Y-%m-%dT%H:%M:%SZ")
        moved = (moment + delta).strftime("%Y-%m-%dT%H:%M:%SZ")
        return b'"' + match.group(1) + b'":"' + moved.encode() + b'"'

    return _TIME.sub(shift, line)


def build(source: Path, events: int, hour: datetime) -> list[bytes]:
    """The lines of the modern hour, in time order."""
    with gzip.open(source, "rb") as handle:
        originals = [line for line in handle.read().split(b"\n") if line.strip()]
    copies = -(-events // len(originals))
    step = 3600 / copies
    source_hour = datetime.fromisoformat(orjson.loads(originals[0])["created_at"]).replace(
        minute=0, second=0, tzinfo=None
    )

    keyed: list[tuple[datetime, int, bytes]] = []
    for position in range(events):
        copy, index = divmod(position, len(originals))
        obj = orjson.loads(originals[index])
        created = datetime.strptime(obj["created_at"], "%Y-%m-%dT%H:%M:%SZ")
        offset = ((created - source_hour).total_seconds() + copy * step) % 3600
        new_created = hour + timedelta(seconds=int(offset))
        obj["id"] = str(ID_BASE + position)
        if copy:
            _rename(obj, copy)
        line = _shift_times(orjson.dumps(obj), new_created - created)
        keyed.append((new_created, position, line))
    keyed.sort()
    return [line for _, _, line in keyed]


def ensure(
    events: int = DEFAULT_EVENTS,
    *,
    source: Path = DEFAULT_SOURCE,
    hour: str = DEFAULT_HOUR,
    data_dir: Path = DATA_DIR,
    quiet: bool = False,
) -> tuple[Path, Path]:
    """Build the modern hour unless both its files exist; returns their paths."""
    gz_path, plain_path = paths(events, data_dir)
    if gz_path.exists() and plain_path.exists():
        return gz_path, plain_path
    if not source.exists():
        raise SystemExit(f"error: {source} is missing: the benchmark needs ../shared/data")
    data_dir.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"building {gz_path.name} from {source.name} ...", file=sys.stderr, flush=True)
    start = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=None)
    data = b"\n".join(build(source, events, start)) + b"\n"
    # Written under temporary names and renamed: an interrupted build leaves no half file.
    plain_tmp, gz_tmp = plain_path.with_suffix(".part"), gz_path.with_suffix(".part")
    plain_tmp.write_bytes(data)
    with gzip.open(gz_tmp, "wb", compresslevel=6) as handle:
        handle.write(data)
    plain_tmp.rename(plain_path)
    gz_tmp.rename(gz_path)
    return gz_path, plain_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the hour")
    parser.add_argument("--hour", default=DEFAULT_HOUR, help="target hour, YYYY-MM-DDTHH (UTC)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="real GH Archive hour")
    parser.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    args = parser.parse_args()
    if args.force:
        for path in paths(args.events):
            path.unlink(missing_ok=True)
    gz_path, plain_path = ensure(args.events, source=args.source, hour=args.hour)
    print(f"{gz_path} ({gz_path.stat().st_size:,} bytes)")
    print(f"{plain_path} ({plain_path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
