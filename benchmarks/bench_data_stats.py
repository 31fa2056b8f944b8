"""Scale check: `llmcls data stats` over a 1,000,000-row file in the arXiv snapshot's own format.

    python benchmarks/bench_data_stats.py --rows 1000000 --workdir /tmp/llmcls-bench

Builds the file by repeating real snapshot records (the bundled sample, or --source) with new ids, then runs
`llmcls data stats` in a fresh process with an empty datasets cache (a cold run, as a user's first), and prints
wall time and peak resident memory of that process. Target (issue 2): at most 90 s and 3 GB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aapd_protocol import run_line  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "llmcls" / "resources" / "data" / "arxiv-snapshot.jsonl"


def build_file(source: Path, rows: int, out: Path) -> None:
    records = [json.loads(line) for line in source.open(encoding="utf-8") if line.strip()]
    with out.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            record = dict(records[i % len(records)])
            record["id"] = f"{9000 + i // 100_000:04d}.{i % 100_000:05d}"
            handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llmcls-bench-stats"))
    parser.add_argument("--keep", action="store_true", help="Keep the generated file and cache.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "arxiv-metadata-oai-snapshot.json"
    started = time.perf_counter()
    build_file(args.source, args.rows, data)
    build_s = time.perf_counter() - started
    cache = args.workdir / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, "-m", "llmcls", "data", "stats", str(data), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if result.returncode != 0:
        sys.exit(f"llmcls data stats failed:\n{result.stderr[-2000:]}")
    stats = json.loads(result.stdout)
    print(run_line())
    print(f"# bench_data_stats: {args.rows:,} snapshot-format rows ({data.stat().st_size / 1e9:.2f} GB, built from "
          f"{args.source.name} in {build_s:.0f} s), cold datasets cache, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"# command: {' '.join(command[1:])}")
    print()
    print("| rows | labels | wall (s) | peak RSS (MB) | target |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {stats['n_examples']:,} | {stats['n_labels']} | {wall:.1f} | {peak_mb:,.0f} | <= 90 s, <= 3,000 MB |")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
