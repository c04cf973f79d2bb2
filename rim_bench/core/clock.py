"""When this process started, for the whole wall time a run reports (start-up + run).

On Linux the kernel's own record: ``/proc/self/stat``'s start time (field 22, clock ticks since
boot) against ``CLOCK_BOOTTIME`` now, so the interpreter's start-up and every import count.
Elsewhere (or if that reads wrong) the moment this module was first imported: `rim-bench`'s
entry point (`rim_bench.commands.cli`) imports it before anything else of rim-bench, so only the
interpreter's own start-up is missed. Imports nothing heavy: the CLI loads it first.
"""

from __future__ import annotations

import functools
import os
import time

_IMPORTED = time.perf_counter()
_previous_run_end: float | None = None  # when this process's last run ended (perf_counter)


def process_age() -> float | None:
    """Seconds since this process started, from the kernel (Linux); None where it cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        # the command name (field 2) may hold spaces and parentheses: count from the last ')'
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux: no /proc, no CLOCK_BOOTTIME
        return None
    return age if age >= 0 else None


@functools.cache  # read once: the kernel counts in clock ticks (10 ms), so each reading differs a little
def process_started() -> tuple[float, str]:
    """When this process started (a `time.perf_counter` value) and how that is known."""
    age = process_age()
    now = time.perf_counter()
    if age is not None and now - age <= _IMPORTED:  # the kernel's start precedes our first import
        return now - age, "process start"
    return _IMPORTED, "first import of rim-bench"


def run_began() -> tuple[float, str]:
    """Where a run's start-up began: the process's start, or, for a later run in the same process
    (a sweep's next point, a second `Trainer.test`), the end of the run before it."""
    if _previous_run_end is not None:
        return _previous_run_end, "end of the previous run in this process"
    return process_started()


def mark_run_end(at: float) -> None:
    """Record that a run ended at `at` (`time.perf_counter`): the next run's start-up begins there."""
    global _previous_run_end
    _previous_run_end = at
