"""Summarize a py-spy raw profile (``py-spy record -f raw``): where the samples are.

    python bench/profile_summary.py PROFILE.raw [TOP]

Prints the functions holding the most samples, by self time (the innermost
frame) and by total time (anywhere on the stack), as percentages.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int = 15) -> str:
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [frame.split(" (")[0] + _where(frame) for frame in stack.split(";")]
        self_time[frames[-1]] += count
        for frame in set(frames):
            total_time[frame] += count
    lines = [f"{samples} samples", "self:"]
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("total:")
    lines += [f"  {n / samples:6.1%}  {name}" for name, n in total_time.most_common(top)]
    return "\n".join(lines)


def _where(frame: str) -> str:
    if " (" not in frame:
        return ""
    location = frame.split(" (", 1)[1].rstrip(")")
    file = location.split(":")[0]
    return f" ({'/'.join(file.split('/')[-2:])})"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
