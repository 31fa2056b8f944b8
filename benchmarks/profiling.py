"""A GPU-busy summary for the throughput benchmarks: is a loop limited by the GPU or by the CPU feeding it?

`Profile` wraps torch.profiler around a window (training steps through a TrainerCallback, or any code in a `with`
block) and prints the wall time, the time the GPU spent in kernels (kernels of one stream never overlap, so their
sum is the busy time), the busy fraction, and the operators that took the most GPU time. A busy fraction well
under 1 says the CPU (Python, kernel launches, synchronisations, data loading) is the limit, not the GPU.
"""

from __future__ import annotations

import time


class Profile:
    def __init__(self, title: str, rows: int = 12):
        self.title, self.rows, self.profiler, self.started = title, rows, None, 0.0

    def start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
        self.profiler = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
        self.profiler.__enter__()
        self.started = time.perf_counter()

    def stop(self) -> None:
        import torch

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
