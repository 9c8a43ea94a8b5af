"""What the benchmarks share: the machine's state beside every timing, and a stage clock.

:class:`StageClock` times the stages of a session without changing its code: it wraps
methods on the instances (or module functions) and charges each call's time to a stage,
exclusive of the wrapped calls made inside it, so nested stages add up to the total. On CUDA
every wrapped call is bracketed by synchronisations, which the code itself does not make, so
the stages add up to a little more than an untimed run.
"""

from __future__ import annotations

import os
import time


def load_average() -> float:
    """The machine's one-minute load average (2 cores shared with other work read 2+)."""
    return os.getloadavg()[0]


def matmul_gflops(threads: int) -> float:
    """The float32 matmul rate on ``threads`` CPU threads: CPU timings scale with it."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9


class StageClock:
    """Seconds per stage over one measured step (:meth:`measure`)."""

    def __init__(self, device, stages) -> None:
        self.device = device
        self.stages = tuple(stages)
        self.seconds = dict.fromkeys(self.stages, 0.0)
        self._inner: list[float] = []  # per open wrapped call: seconds of the calls inside it

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, owner, name: str, stage: str) -> None:
        """Charge the calls of ``owner.name`` to ``stage`` from now on."""
        if stage not in self.seconds:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(self.stages)}")
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            self.sync()
            begin = time.perf_counter()
            self._inner.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                self.sync()
                elapsed = time.perf_counter() - begin
                inner = self._inner.pop()
                self.seconds[stage] += elapsed - inner
                if self._inner:
                    self._inner[-1] += elapsed

        setattr(owner, name, timed)

    def measure(self, function) -> dict:
        """Run ``function`` once: its total seconds, seconds per stage (the rest as "other"),
        the share that is not ``network`` stages, and the load average after it."""
        self.seconds = dict.fromkeys(self.stages, 0.0)
        self.sync()
        begin = time.perf_counter()
        function()
        self.sync()
        total = time.perf_counter() - begin
        stages = dict(self.seconds)
        stages["other"] = max(0.0, total - sum(stages.values()))
        network = sum(seconds for stage, seconds in stages.items() if stage.startswith("network"))
        return {"total_s": total, "stages": stages, "host_share": 1.0 - network / total, "load": load_average()}


def format_stages(step: dict, per: int = 1) -> str:
    """One step's stages in milliseconds (divided by ``per``, e.g. per slice)."""
    parts = [f"{name} {1000 * seconds / per:.1f}" for name, seconds in step["stages"].items()]
    return (f"{1000 * step['total_s'] / per:9.1f} ms = " + ", ".join(parts)
            + f" ms; not network {100 * step['host_share']:.1f} %")
