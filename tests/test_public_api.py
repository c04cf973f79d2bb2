"""The public surface: `from rim_bench import RIM, RIMModule, BenchmarkDataModule`, lazily; the
old module paths forward to the new ones with a DeprecationWarning (CHANGELOG.md lists them)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_rim_bench_loads_no_torch():
    code = ("import sys, rim_bench; assert 'torch' not in sys.modules, 'torch loaded'; "
            "from rim_bench import RIMModule; assert 'torch' in sys.modules; print(RIMModule.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "rim_bench.run.lit_module"


def test_top_level_names_are_the_modules_objects():
    import rim_bench
    from rim_bench.commands.api import RIM
    from rim_bench.run.datamodule import BenchmarkDataModule
    from rim_bench.run.lit_module import RIMModule

    assert (rim_bench.RIM, rim_bench.RIMModule, rim_bench.BenchmarkDataModule) == (RIM, RIMModule, BenchmarkDataModule)
    assert set(rim_bench.__all__) == set(rim_bench._HOMES)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rim_bench.Nope  # noqa: B018


@pytest.mark.parametrize(("old", "new", "name"), [
    ("rim_bench.lit_module", "rim_bench.run.lit_module", "RIMModule"),
    ("rim_bench.data.datamodule", "rim_bench.run.datamodule", "BenchmarkDataModule"),
    ("rim_bench.data.datamodule", "rim_bench.run.datamodule", "ShardSampler"),
    ("rim_bench.commands.runner", "rim_bench.run.runner", "run_test"),
    ("rim_bench.commands.runner", "rim_bench.run.datasets", "check_data"),
])
def test_old_paths_warn_and_give_the_same_objects(old, new, name):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"from {new} import {name}") as caught:
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    assert caught[0].filename == __file__  # the warning points at the user's line, not at the shim
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


def test_old_from_import_in_a_script_warns():
    """A user's script from before the move runs, and Python shows it the warning (it is in __main__)."""
    code = "from rim_bench.lit_module import RIMModule; from rim_bench.data.datamodule import BenchmarkDataModule"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "DeprecationWarning: rim_bench.lit_module.RIMModule moved" in out.stderr
    assert "from rim_bench.run.datamodule import BenchmarkDataModule" in out.stderr


def test_changelog_names_each_shim():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for old in ("rim_bench.lit_module", "rim_bench.data.datamodule", "rim_bench.commands.runner"):
        assert f"`{old}" in changelog


def test_the_readme_imports_from_the_public_surface():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    imports = [line for line in lines if line.startswith(("from rim_bench", "import rim"))]
    assert "from rim_bench import BenchmarkDataModule, RIMModule" in imports and "from rim_bench import RIM" in imports
    assert all(re.fullmatch(r"from rim_bench import [\w, ]+", line) for line in imports), imports
    for line in imports:
        exec(line, {})  # each runs as written
