"""The CPU thread count the commands choose."""

from __future__ import annotations

import pytest

from rim_bench.core.errors import ConfigError
from rim_bench.core.threads import THREADS_ENV, cpu_threads


def test_threads_shared_among_processes(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu_threads(1) == 8
    assert cpu_threads(3) == 2
    assert cpu_threads(16) == 1


def test_user_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert cpu_threads(1) is None  # torch already follows OMP_NUM_THREADS
    monkeypatch.setenv(THREADS_ENV, "5")
    assert cpu_threads(4) == 5
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ConfigError, match="RIM_BENCH_THREADS='many'"):
        cpu_threads()
