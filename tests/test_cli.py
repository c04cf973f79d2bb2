"""Bad input on the command line: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rim_bench.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("args, fragment", [
    (["test", "experiment=smoke", "matcher.rim.temprature=0.1"], "unknown config key 'matcher.rim.temprature'"),
    (["test", "experiment=nope"], "experiment 'nope' not found"),
    (["test", "experiment=smoke", "data.name=voc21", "data.root=/no/such/dir"],
     "data root '/no/such/dir' does not exist"),
    (["test", "experiment=smoke", "proposer.superpixels.n_segments=many"], "must be int"),
    (["test", "experiment=smoke", "matcher.name=nearest"], "unknown matcher 'nearest'"),
])
def test_bad_input_is_one_clear_line(args: list[str], fragment: str):
    result = _cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rim-bench: error:") and fragment in lines[0], result.stderr


def test_config_command_prints_resolved_config():
    result = _cli("config", "experiment=smoke", "seed=3")
    assert result.returncode == 0
    assert "seed: 3" in result.stdout and "# result hash: " in result.stdout and "${" not in result.stdout
