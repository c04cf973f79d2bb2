"""Shared fixtures. Every test run gets its own cache (banks, generated data sets)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# One thread per process, set before torch loads and inherited by CLI and DDP subprocesses:
# on a 2-core machine torch's default (a thread per core in every process) made the suite
# up to 15 times slower (53 min against 3.5 min under load). RIM_BENCH_TEST_THREADS raises it.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("RIM_BENCH_TEST_THREADS", "1"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Set before any rim_bench config is loaded, and inherited by CLI subprocesses.
os.environ["RIM_BENCH_CACHE"] = tempfile.mkdtemp(prefix="rim-bench-test-cache-")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_root() -> Path:
    """The generated smoke benchmark (VOC layout + exemplars)."""
    from rim_bench.data.smoke import generate_smoke

    return generate_smoke(Path(os.environ["RIM_BENCH_CACHE"]) / "smoke")


@pytest.fixture(scope="session")
def tiny_featurizer():
    from rim_bench.stages.features.dense import DinoV2Featurizer

    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                patch_size=8, image_size=64, seed=0)
    return DinoV2Featurizer(model="tiny", input_size=64, tiny=tiny)


@pytest.fixture
def data(smoke_root: Path, tmp_path: Path) -> Path:
    """A copy of the smoke benchmark (VOC layout, with its exemplars) that a test may damage."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(smoke_root, copy)
    return copy


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if a run gets as far as loading its models."""
    from rim_bench.run.assembly import Assembly

    def refuse(*args, **kwargs):
        raise AssertionError("models were loaded before the input was checked")
    monkeypatch.setattr(Assembly, "pipeline", refuse)
