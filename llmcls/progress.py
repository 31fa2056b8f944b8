"""Terminal output: one rich console (stderr, so stdout stays clean for `--json`), spinners and progress bars."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True, highlight=False)


@contextmanager
def status(message: str):
    """A spinner with elapsed time while a step runs; prints the step and its duration when it ends."""
    import time

    started = time.perf_counter()
    with console.status(message):
        yield
    console.print(f"{message}: done in {time.perf_counter() - started:.1f}s")
