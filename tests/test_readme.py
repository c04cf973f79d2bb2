"""Every README example runs as written: the shell commands of its ```bash blocks, in order, in
one scratch folder (as a user would type them one after the other), except those listed in
SKIPPED with the reason. `config`, `--print_config` and `--help` lines are the fast tier; the
runs on the smoke benchmark are slow (several minutes together on 2 cores)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rim_bench.core.config import load_config

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# What is not run here, and why; every other command must be a `rim-bench` or `rim-bench-lightning` one.
SKIPPED = [
    (r"^pip install", "installs packages: the tests run in an installed checkout"),
    (r"python -m pytest", "runs the test suite itself"),
    (r"\bDATA\b", "needs a benchmark's downloaded data (DATA)"),
    (r"\.pth\b", "needs the SAM checkpoint (real weights)"),
    (r"make_real_size_fixtures", "writes 9 GB of real-size fixtures (the slow tier's real_size tests use them)"),
    (r"benchmarks/", "a measurement taking minutes (or a GPU), not an example"),
]
FAST = r"^rim-bench config |--print_config|--help"


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks: continuation lines joined, comments dropped, ``a && b`` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            commands += [part.strip() for part in line.split(" && ") if part.strip()]
    return commands


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED if re.search(pattern, command)), None)


COMMANDS = readme_commands(README.read_text())


def _param(command: str):
    marks = [] if re.search(FAST, command) or skip_reason(command) else [pytest.mark.slow]
    return pytest.param(command, marks=marks, id=command[:80])


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory, smoke_root: Path) -> Path:
    """Where the user types the commands; `photos/` holds two of their pictures (smoke images)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "photos").mkdir()
    for image in sorted((smoke_root / "JPEGImages").glob("*.jpg"))[:2]:
        (folder / "photos" / image.name).write_bytes(image.read_bytes())
    return folder


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command_runs_as_written(command: str, user_folder: Path):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    assert re.match(r"rim-bench(-lightning)? ", command), (
        f"README command {command!r}: not a rim-bench command; run it here or add it to SKIPPED with a reason")
    # `rim-bench` as this checkout's code (whatever is installed), the cache as the test session's.
    shell = (f'rim-bench() {{ "{sys.executable}" -m rim_bench.commands.cli "$@"; }}\n'
             f'rim-bench-lightning() {{ "{sys.executable}" -m rim_bench.commands.lightning "$@"; }}\n'
             + command.replace("~/.cache/rim-bench", '"$RIM_BENCH_CACHE"'))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", "-c", shell], cwd=user_folder, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr


def test_readme_has_commands_to_run_and_skips_with_reasons():
    run = [c for c in COMMANDS if not skip_reason(c)]
    assert any(re.search(FAST, c) for c in run) and any(c.startswith("rim-bench test experiment=smoke") for c in run)
    assert any(skip_reason(c) for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("rim-bench test ") and not skip_reason(c)])
def test_readme_test_commands_name_real_config_keys(command: str):
    """The fast tier's check of the slow runs' settings: each config resolves (keys, values, choices)."""
    load_config(shlex.split(command)[2:])


@pytest.mark.parametrize("command", sorted({" ".join(shlex.split(c)[:2]) for c in COMMANDS
                                            if re.match(r"rim-bench(-lightning)? ", c) and not skip_reason(c)}))
def test_readme_commands_have_help(command: str, capsys, monkeypatch):
    from rim_bench.commands import cli, lightning

    program, sub = command.split()
    monkeypatch.setattr(sys, "argv", [program])
    with pytest.raises(SystemExit) as exit_info:
        (cli.main if program == "rim-bench" else lightning.main)([sub, "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_torch_is_a_range_and_the_readme_states_it():
    """An exact pin made pip replace the torch a researcher had; the README says the tested range."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    specs = {r.name: r.specifier for r in map(Requirement, dependencies)}
    for name in ("torch", "torchvision"):
        assert specs[name] and all(s.operator in (">=", "<") for s in specs[name]), specs[name]
    low = next(s.version for s in specs["torch"] if s.operator == ">=")
    assert f"torch {low} to " in README.read_text()
