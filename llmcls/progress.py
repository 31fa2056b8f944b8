"""Terminal output: one rich console for messages and progress (stderr, so stdout stays clean for `--json`),
one for results (stdout), spinners for steps."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console


def _width(stream) -> int | None:
    """Rich falls back to 80 columns when not writing to a terminal; tables of metrics need more (logs, CI)."""
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None
    return 180


def _other_process() -> bool:
    """A process of `accelerate launch` (or torchrun) other than the first: its notes, progress bars and results
    would repeat the first's once per GPU. Errors do not go through these consoles: every process still says its
    own."""
    return os.environ.get("RANK", "0").strip() not in ("", "0")


console = Console(stderr=True, highlight=False, width=_width(sys.stderr), quiet=_other_process())
results = Console(highlight=False, width=_width(sys.stdout), quiet=_other_process())


@contextmanager
def status(message: str):
    """A spinner with elapsed time while a step runs; prints the step and its duration when it ends."""
    import time

    started = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"{message}: done in {time.perf_counter() - started:.1f}s")
