"""CPU threads per process: as many as the cores this process may use, shared among its peers.

torch gives every process one intra-op thread per core. Several processes on one machine
(DDP ranks on a CPU, a test suite beside other work) then run cores x processes threads and
thrash. Measured on a 2-core machine shared with other work: the test suite took 53 min at
load 7 with torch's default threads, and 3 min 35 s with ``OMP_NUM_THREADS=1``; a tiny Stable
Diffusion image went from 5 s to 0.09 s. `RIM_BENCH_THREADS` sets the count; an
`OMP_NUM_THREADS` the user set is left as it is.
"""

from __future__ import annotations

import os

from rim_bench.core.errors import ConfigError

THREADS_ENV = "RIM_BENCH_THREADS"


def cpu_threads(processes_per_node: int = 1) -> int | None:
    """The intra-op thread count for one of `processes_per_node` processes; None = the user chose
    (``OMP_NUM_THREADS``) and torch already follows it."""
    if os.environ.get(THREADS_ENV):
        value = os.environ[THREADS_ENV]
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{THREADS_ENV}={value!r}: give a whole number of threads, at least 1")
        return int(value)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes_per_node))


def set_cpu_threads(processes_per_node: int = 1) -> None:
    """Apply `cpu_threads` to torch (call once per process, before heavy work)."""
    import torch

    threads = cpu_threads(processes_per_node)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
