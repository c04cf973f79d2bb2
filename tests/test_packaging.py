"""What a pip install holds: every file that is not Python under rim_bench/ is package data, the
shipped BPE vocabulary is the open_clip wheel's, and a peer method runs from an installed wheel in
an empty folder with no environment variable set."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from rim_bench.stages.backbones.openai_clip import BPE_FILE, Architecture, BpeTokenizer, find_bpe, random_state_dict

REPO = Path(__file__).resolve().parent.parent
# The sha256 of open_clip/bpe_simple_vocab_16e6.txt.gz in the open_clip_torch 3.3.0 wheel (clip_vocab/SOURCES.md).
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def _package_data() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]


def _tracked_data_files() -> list[str]:
    """The files under rim_bench/ that git tracks (or would: new and not ignored), Python left out."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "rim_bench"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in listed if not f.endswith((".py", ".pyc")) and (REPO / f).is_file()]


def _glob_matches(path: str, glob: str) -> bool:
    """`glob` matches `path` as setuptools' glob does: part by part, `*` within one folder name."""
    parts, globs = path.split("/"), glob.split("/")
    return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs))


def test_every_data_file_under_the_package_is_package_data():
    """A file the code reads that no pattern matches is missing from a wheel (issue 27: the peers'
    templates, protocols and class files were)."""
    patterns = _package_data()
    unmatched = [file for file in _tracked_data_files()
                 if not any(_glob_matches(file, package.replace(".", "/") + "/" + glob)
                            for package, globs in patterns.items() for glob in globs)]
    assert not unmatched, f"not in [tool.setuptools.package-data]: {unmatched}"


def test_the_shipped_bpe_file_is_open_clips_and_found_by_default(monkeypatch):
    monkeypatch.delenv("RIM_BENCH_CLIP_BPE", raising=False)
    assert find_bpe() == BPE_FILE
    assert hashlib.sha256(BPE_FILE.read_bytes()).hexdigest() == BPE_SHA256
    assert len(BpeTokenizer(BPE_FILE)) == 49408  # CLIP's vocabulary
    assert (BPE_FILE.parent / "LICENSE").read_text().count("MIT") >= 2  # OpenAI's and open_clip's notices


def test_the_bpe_key_and_the_environment_override_the_shipped_file(tmp_path: Path, monkeypatch):
    from rim_bench.core.errors import ConfigError

    own = tmp_path / "own.txt.gz"
    own.write_bytes(BPE_FILE.read_bytes())
    monkeypatch.setenv("RIM_BENCH_CLIP_BPE", str(own))
    assert find_bpe() == own
    assert find_bpe(str(own)) == own
    with pytest.raises(ConfigError, match=r"^bpe: CLIP's BPE vocabulary '.*missing\.gz' not found"):
        find_bpe(tmp_path / "missing.gz")


@pytest.mark.slow
def test_a_peer_runs_from_an_installed_wheel_in_an_empty_folder(tmp_path: Path):
    """Issue 27's check: the wheel, installed into a fresh folder, runs `method=sclip` on smoke with a
    ViT-B/16-format CLIP file (random, narrow) from an empty working directory, no RIM_BENCH_* set."""
    wheels, target, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)], check=True,
                   cwd=tmp_path)
    (wheel,) = wheels.glob("rim_bench-*.whl")
    assert f"rim_bench/stages/backbones/clip_vocab/{BPE_FILE.name}" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    # ViT-B/16's patch, grid, context and vocabulary (what the shipped BPE file tokenizes into), narrow.
    arch = Architecture(width=64, layers=2, patch=16, grid=14, embed_dim=32, context=77, vocab=49408,
                        text_width=64, text_layers=1)
    checkpoint = tmp_path / "ViT-B-16.pt"
    torch.save(random_state_dict(arch), checkpoint)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "PYTHONPATH": str(target),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    run = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "test", "experiment=smoke", "method=sclip",
                          f"featurizer.clip.model={checkpoint}", "data.max_images=2", "output_dir=out"],
                         cwd=empty, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((empty / "out" / "metrics.json").read_text())
    assert metrics["resolved"] == {"pixel.clip.dtype": "float32"}  # what ran: a CPU, float32
    where = subprocess.run([sys.executable, "-c", "import rim_bench; print(rim_bench.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))  # the installed copy ran, not the checkout
