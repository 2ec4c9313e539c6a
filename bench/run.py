"""The ghstream benchmark: each stage against its peer, measured in the same run.

    make bench          # everything, 5 measured repetitions after a warm-up
    make bench-quick    # small inputs, one repetition: checks the scripts work

or directly: ``.venv/bin/python bench/run.py [--quick] [--stages 1,2,5]``.

Prints one Markdown table on stdout (progress on stderr) and keeps a copy, with
the machine it ran on, in ``bench/out/latest.md``. See bench/README.md for what
each stage measures and bench/RESULTS.md for the latest full run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import infra, make_modern_hour  # noqa: E402
from bench.context import Context  # noqa: E402
from bench.harness import Result, log, table  # noqa: E402

STAGES = {
    "1": "parse",
    "2": "ingest",
    "3": "consume",
    "4": "endtoend",
    "5": "latency",
    "6": "memory",
    "7": "query",
}
#: Python peers and what they need, installed into the venv when missing.
PIP_PEERS = {
    "kafka": "kafka-python",
    "crc32c": "crc32c",  # kafka-python's CRC in C; without it the seed producer is 2-3x slower
    "zstandard": "zstandard",  # for kafka-python to read ghstream's zstd batches
    "psycopg": "psycopg[binary]",
}


def ensure_peers() -> None:
    """kcat from Debian and the Python peers from PyPI, installed when missing."""
    if shutil.which("kcat") is None:
        log("installing kcat (apt-get install kcat)")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "kcat"], check=False)
        if shutil.which("kcat") is None:
            subprocess.run([*sudo, "apt-get", "update"], check=True)
            subprocess.run([*sudo, "apt-get", "install", "-y", "kcat"], check=True)
    missing = [package for module, package in PIP_PEERS.items() if not _importable(module)]
    if missing:
        log(f"installing {', '.join(missing)} into the venv")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *missing,
            ],
            check=True,
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine() -> str:
    """Cores, memory and the versions that matter, as one Markdown list."""
    import asyncio

    import asyncpg

    async def pg_version() -> str:
        conn = await asyncpg.connect(infra.POSTGRES_DSN)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    jars = sorted((ROOT / ".local/kafka/libs").glob("kafka_2.13-*.jar"))
    kafka = jars[0].stem.split("-", 1)[1] if jars else "?"
    kcat = subprocess.run(["kcat", "-V"], capture_output=True, text=True).stdout
    librdkafka = next((line for line in kcat.splitlines() if "librdkafka" in line), "?").strip()
    load = os.getloadavg()
    return "\n".join(
        [
            f"- {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{mem_kb / 1024 / 1024:.1f} GiB RAM, {platform.platform()}",
            f"- load average at the end of the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            "(shared machine: other engineers' tests ran meanwhile)",
            f"- Kafka {kafka} (KRaft, one broker), PostgreSQL {asyncio.run(pg_version())}, "
            f"MongoDB stand-in SecantusDB {_version('secantusdb')}",
            f"- Python {platform.python_version()}, aiokafka {_version('aiokafka')}, "
            f"orjson {_version('orjson')}, asyncpg {_version('asyncpg')}, "
            f"pymongo {_version('pymongo')}",
            f"- peers: {librdkafka}; kafka-python {_version('kafka-python')} "
            f"(+ crc32c {_version('crc32c')}), psycopg {_version('psycopg')}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repetition")
    parser.add_argument("--stages", default=",".join(STAGES), help="e.g. 1,2,5 (default: all)")
    parser.add_argument("--reps", type=int, help="measured repetitions (default 5, quick 1)")
    parser.add_argument("--no-install", action="store_true", help="do not install the peers")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; stages are 1-7")

    if not args.no_install:
        ensure_peers()
    events = 5_000 if args.quick else make_modern_hour.DEFAULT_EVENTS
    modern_gz, modern_plain = make_modern_hour.ensure(events)
    small_gz, _ = make_modern_hour.ensure(events // 10)
    ctx = Context(
        quick=args.quick,
        reps=args.reps or (1 if args.quick else 5),
        warmup=0 if args.quick else 1,
        modern_gz=modern_gz,
        modern_plain=modern_plain,
        modern_events=events,
        small_gz=small_gz,
        small_events=events // 10,
    )

    started = time.monotonic()
    results: list[Result] = []
    try:
        for stage in stages:
            module = importlib.import_module(f"bench.stages.{STAGES[stage]}")
            results.extend(module.run(ctx))
    finally:
        infra.cleanup_filled()
    elapsed = time.monotonic() - started

    report = "\n\n".join(
        [
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{'quick' if ctx.quick else 'full'}, {ctx.reps} measured repetitions "
            f"(+{ctx.warmup} warm-up), {elapsed / 60:.1f} min.",
            table(results),
            machine(),
        ]
    )
    print(report)
    infra.OUT.mkdir(parents=True, exist_ok=True)
    (infra.OUT / ("latest-quick.md" if ctx.quick else "latest.md")).write_text(report + "\n")
    failed = [r for r in results if r.met is False]
    if failed:
        log(f"{len(failed)} goal(s) not met (benchmarks never fail the build)")


if __name__ == "__main__":
    main()
