"""Wall-clock time and peak memory per pipeline stage, for the breakdown printed after a run.

Peak memory is the process's own: host RSS (Linux's high-water mark VmHWM, restarted at
every stage boundary through ``/proc/self/clear_refs``) and, where CUDA is in use, torch's
max allocated. Both counters are process-wide, so before one is restarted its value is
credited to every stage open at that moment: stages nest ("reference bank" holds
"generation"), and a stage's peak covers its nested stages. Data-loader worker processes
are not counted. Where the high-water mark cannot be restarted (not Linux), each stage's
peak is the process's peak so far: an upper bound.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rim_bench.core.clock import mark_run_end, run_began

# The framework's own work; every other stage not nested in another is the models' share.
FRAMEWORK_STAGES = ("data setup", "data", "region map", "painting", "scoring", "writing")
_MB = 2**20

_open: list[tuple[StageTimer, str]] = []  # the stages open in this process, outermost first
_process_peak = 0  # the largest RSS high-water mark read so far (restarts erase it from VmHWM)


class StageTimer:
    """Seconds, call counts and peak memory (bytes) per stage name (CUDA is synchronized first)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every stage (in place: the stages holding this timer keep it)."""
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.peak_rss: dict[str, int] = defaultdict(int)
        self.peak_cuda: dict[str, int] = {}
        self.nested: set[str] = set()  # stages that ran inside another stage of this timer
        self.started: float | None = None  # when its first stage began (perf_counter)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _sync()
        _credit_peaks()
        if any(timer is self for timer, _ in _open):
            self.nested.add(stage)
        entry = (self, stage)
        _open.append(entry)
        start = time.perf_counter()
        if self.started is None:
            self.started = start
        try:
            yield
        finally:
            _sync()
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1
            _credit_peaks()
            _open.remove(entry)

    def add(self, stage: str, seconds: float) -> None:
        """Count time measured elsewhere (e.g. the wait for the data loader), without memory."""
        self.seconds[stage] += seconds
        self.calls[stage] += 1

    def timed(self) -> float:
        """Seconds timed so far in top-level stages (a nested stage's time is in its parent's)."""
        return sum(v for k, v in self.seconds.items() if k not in self.nested)

    def shares(self) -> dict[str, float]:
        """Seconds of the framework's stages and of the models' (top-level stages only)."""
        framework = sum(v for k, v in self.seconds.items() if k in FRAMEWORK_STAGES and k not in self.nested)
        return {"framework": round(framework, 4), "models": round(self.timed() - framework, 4)}

    def table(self, total: float, images: int | None = None, loop_seconds: float | None = None,
              wall: WallSplit | None = None) -> str:
        """A text table: stage, seconds, share of `total`, calls, peak host RSS (and CUDA) in MB;
        then the framework's and the models' shares, and the throughput of `images` in `loop_seconds`.
        With `wall`, `total` is its whole wall time and the table shows its start-up and run rows."""
        cuda = bool(self.peak_cuda)
        rows = [f"{'stage':<22}{'seconds':>10}{'share':>9}{'calls':>8}{'peak RSS':>11}"
                + (f"{'peak CUDA':>11}" if cuda else "")]
        for stage, sec in self.seconds.items():
            name = ("  " if stage in self.nested else "") + stage
            rss = f"{self.peak_rss[stage] / _MB:.0f} MB" if self.peak_rss.get(stage) else "-"
            row = f"{name:<22}{sec:>10.2f}{100 * sec / max(total, 1e-9):>8.1f}%{self.calls[stage]:>8}{rss:>11}"
            if cuda:
                row += f"{self.peak_cuda[stage] / _MB:>8.0f} MB" if stage in self.peak_cuda else f"{'-':>11}"
            rows.append(row)
        peak = process_peak_bytes() / _MB
        if wall is not None:
            for name, sec in (("start-up (wall)", wall.start_up), (f"{wall.run_name} (wall)", wall.run)):
                rows.append(f"{name:<22}{sec:>10.2f}{100 * sec / max(total, 1e-9):>8.1f}%")
        rows.append(f"{'total (wall)':<22}{total:>10.2f}{100.0:>8.1f}%{'':>8}{peak:>8.0f} MB")
        if wall is not None:
            rows.append(f"start-up: from the {wall.since} to the {wall.run_name} ({wall.start_up_holds})")
        shares = self.shares()
        rows.append(f"framework (data, region map, painting, scoring, writing) {shares['framework']:.2f} s "
                    f"({100 * shares['framework'] / max(total, 1e-9):.1f}%), models {shares['models']:.2f} s "
                    f"({100 * shares['models'] / max(total, 1e-9):.1f}%)")
        if images and loop_seconds:
            rows.append(f"throughput {images / loop_seconds:.2f} images/s ({images} images in {loop_seconds:.2f} s)")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}

    def memory_dict(self) -> dict[str, dict[str, float]]:
        """Peak memory per stage in MB: ``{"host_rss": {...}, "cuda_max_allocated": {...}}`` (CUDA if used)."""
        out = {"host_rss": {k: round(v / _MB, 1) for k, v in self.peak_rss.items() if v}}
        if self.peak_cuda:
            out["cuda_max_allocated"] = {k: round(v / _MB, 1) for k, v in self.peak_cuda.items()}
        return out


@dataclass(frozen=True)
class WallSplit:
    """A run's whole wall time in seconds, split in two: ``start_up`` (from `since`, the process's start
    or the end of its previous run, to the run: imports, models, bank) and ``run`` (named `run_name`)."""

    start_up: float
    run: float
    since: str = "process start"
    run_name: str = "test loop"
    start_up_holds: str = "imports, config, data set, models, bank or text embeddings"

    @property
    def whole(self) -> float:
        return self.start_up + self.run

    @classmethod
    def ending(cls, now: float, run_started: float, **names: str) -> WallSplit:
        """The split of a run that started at `run_started` and ends `now` (`time.perf_counter` values;
        `names`: ``run_name``, ``start_up_holds``); the next run in this process starts its start-up here."""
        began, since = run_began()
        mark_run_end(now)
        return cls(start_up=max(run_started - began, 0.0), run=now - run_started, since=since, **names)

    def as_dict(self) -> dict[str, float | str]:
        """metrics.json's ``wall_seconds``: start_up + run = whole (rounded so that they still add up)."""
        start_up, run = round(self.start_up, 3), round(self.run, 3)
        return {"whole": round(start_up + run, 3), "start_up": start_up, "run": run,
                "start_up_from": self.since, "run_is": self.run_name}


def host_peak_bytes() -> int:
    """The process's peak RSS since the last restart of the counter, in bytes."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmHWM:\s*(\d+) kB", f.read())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    # not Linux: the peak since the process started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB on Linux


def process_peak_bytes() -> int:
    """The process's peak RSS since it started, in bytes."""
    return max(_process_peak, host_peak_bytes())


def restart_host_peak(current_peak: int | None = None) -> None:
    """Start the RSS high-water mark again from the current RSS (does nothing where Linux's
    ``/proc/self/clear_refs`` is not there). `current_peak`: `host_peak_bytes()` just read, if it was."""
    global _process_peak
    _process_peak = max(_process_peak, host_peak_bytes() if current_peak is None else current_peak)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the high-water mark to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _credit_peaks() -> None:
    """Credit the peaks since the last restart to every open stage, then restart the counters."""
    rss = host_peak_bytes()
    cuda = torch.cuda.max_memory_allocated() if _cuda_in_use() else None
    for timer, stage in _open:
        timer.peak_rss[stage] = max(timer.peak_rss[stage], rss)
        if cuda is not None:
            timer.peak_cuda[stage] = max(timer.peak_cuda.get(stage, 0), cuda)
    restart_host_peak(rss)  # one read of /proc/self/status per stage boundary
    if cuda is not None:
        torch.cuda.reset_peak_memory_stats()


def _cuda_in_use() -> bool:
    # Not `is_available()`: with Lightning imported (it sets PYTORCH_NVML_BASED_CUDA_CHECK=1) each
    # call asks NVML again, ~0.1 ms on a machine without a GPU, several times per image.
    return torch.cuda.is_initialized()


def _sync() -> None:
    if _cuda_in_use():
        torch.cuda.synchronize()
