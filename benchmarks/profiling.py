"""A GPU-busy summary for the throughput benchmarks: is a loop limited by the GPU or by the CPU feeding it?

`Profile` wraps torch.profiler around a window (training steps through a TrainerCallback, or any code in a `with`
block) and prints the wall time, the time the GPU spent in kernels (kernels of one stream never overlap, so their
sum is the busy time), the busy fraction, and the operators that took the most GPU time. A busy fraction well
under 1 says the CPU (Python, kernel launches, synchronisations, data loading) is the limit, not the GPU.
On a GPU the window also lists where the host waited for it (`SyncSites`): each synchronising call stops the CPU
from queueing work ahead, so the GPU idles while the CPU prepares what comes next.
"""

from __future__ import annotations

import time
import traceback
import warnings
from collections import Counter

SYNC_WARNING = "synchronizing CUDA operation"  # what torch.cuda.set_sync_debug_mode("warn") says at each one


class SyncSites:
    """Counts the calls that made the host wait for the GPU (an `.item()`, a tensor's truth value, a blocking copy,
    an output whose shape depends on the data), by the Python lines that made them: torch's sync debug mode warns
    at each one and the warning's stack names the innermost lines outside torch. The warnings cost the window a
    little wall time (a stack walk each)."""

    def __init__(self, depth: int = 3):
        self.depth, self.sites, self._catcher, self._show = depth, Counter(), None, None

    def start(self) -> None:
        import torch

        self._catcher = warnings.catch_warnings()  # restores the filters and showwarning at stop()
        self._catcher.__enter__()
        warnings.simplefilter("always")  # every occurrence, not once per line
        self._show = warnings.showwarning
        warnings.showwarning = self._seen
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        import torch

        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)

    def _seen(self, message, category, filename, lineno, file=None, line=None) -> None:
        if SYNC_WARNING not in str(message):  # any other warning shows as it would have
            self._show(message, category, filename, lineno, file, line)
            return
        ours = [frame for frame in traceback.extract_stack()[:-1]
                if "/torch/" not in frame.filename and not frame.filename.endswith(("warnings.py", "profiling.py"))]
        self.sites[" < ".join(_short(frame) for frame in ours[::-1][: self.depth])] += 1

    def table(self, rows: int = 12) -> str:
        if not self.sites:
            return "no synchronising calls"
        lines = [f"{sum(self.sites.values())} synchronising calls at {len(self.sites)} call sites (innermost line "
                 "first, then its callers):", "| calls | where |", "|---:|---|"]
        lines += [f"| {n} | {where} |" for where, n in self.sites.most_common(rows)]
        return "\n".join(lines)


def _short(frame) -> str:
    """`package/module.py:line function` from a frame of site-packages, the checkout or anywhere else."""
    path = frame.filename
    for marker in ("site-packages/", "/llmcls/", "/benchmarks/"):
        if marker in path:
            path = (marker.strip("/") + "/" if marker != "site-packages/" else "") + path.split(marker)[-1]
            break
    return f"{path}:{frame.lineno} {frame.name}"


class Profile:
    def __init__(self, title: str, rows: int = 12):
        self.title, self.rows, self.profiler, self.started, self.syncs = title, rows, None, 0.0, None

    def start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
        self.profiler = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
        self.profiler.__enter__()
        if cuda:
            self.syncs = SyncSites()
            self.syncs.start()
        self.started = time.perf_counter()

    def stop(self) -> None:
        import torch

        if self.syncs is not None:
            self.syncs.stop()  # before the synchronize below, which is the window's end, not a wait inside it
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        from torch.autograd import DeviceType

        # the kernels' own rows (an operator's row repeats its kernels' time, so summing every row counts it twice)
        busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6
        print(f"\n## profile: {self.title}: wall {wall * 1e3:,.1f} ms, GPU kernels {busy * 1e3:,.1f} ms "
              f"(busy {busy / wall:.0%})")
        print(events.table(sort_by="self_device_time_total", row_limit=self.rows, max_name_column_width=60))
        if self.syncs is not None:
            print(f"\nwhere the host waited for the GPU ({self.title}):\n{self.syncs.table()}")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def step_window(profile: Profile, first: int, last: int):
    """A TrainerCallback that profiles optimizer steps first+1 .. last."""
    from transformers import TrainerCallback

    class Window(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == first:
                profile.start()
            elif state.global_step == last:
                profile.stop()

    return Window()
