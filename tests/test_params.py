"""Stage parameters declared once (rim_bench.core.params): default.yaml agrees with the declarations,
and a new matcher or featurizer is one module (README "Adding a method")."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rim_bench.commands.cli import main
from rim_bench.core.config import DEFAULT_FILE, load_config
from rim_bench.core.errors import ConfigError
from rim_bench.core.params import declared
from rim_bench.core.registry import DATASETS, REGISTRIES

# One module: a matcher and a featurizer with their parameters, choices, ranges and weights.
NEW_STAGES = '''
from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rim_bench.core.params import HubWeights, Range
from rim_bench.core.registry import FEATURIZERS, MATCHERS


@MATCHERS.register("nearest_mean")
class NearestMean:
    def __init__(self, scale: Annotated[float, Range(1e-6)] = 2.0, how: Literal["cos", "dot"] = "cos") -> None:
        self.scale, self.how = scale, how

    def __call__(self, regions: Tensor, bank) -> Tensor:
        """``(N, D)`` -> ``(N, C)``."""
        means = torch.stack([bank.features[bank.class_ids == c].mean(0) for c in range(bank.num_classes)])
        if self.how == "cos":
            regions, means = F.normalize(regions, dim=1), F.normalize(means, dim=1)
        return self.scale * regions @ means.T.to(regions)


@FEATURIZERS.register("colour")
class Colour(nn.Module):
    def __init__(self, model: str = "tiny", cell: Annotated[int, Range(1)] = 8) -> None:
        super().__init__()
        self.cell, self.feature_dim = cell, 3
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)

    @classmethod
    def weights(cls, params: dict, key: str) -> list[HubWeights]:
        return [] if params["model"] == "tiny" else [HubWeights(f"{key}.model", params["model"])]

    def forward(self, image: Tensor) -> Tensor:
        """``(3, H, W) uint8`` -> ``(3, H / cell, W / cell)``."""
        return F.avg_pool2d(image.float()[None] / 255, self.cell)[0] * self.scale
'''


@pytest.fixture(scope="module")
def new_stages(tmp_path_factory):
    """NEW_STAGES as module `my_stages`, imported (its decorators register it); unregistered after."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_stages.py").write_text(textwrap.dedent(NEW_STAGES))
    sys.path.insert(0, str(folder))
    importlib.import_module("my_stages")
    yield
    sys.path.remove(str(folder))
    sys.modules.pop("my_stages")
    for key, name in (("matcher", "nearest_mean"), ("featurizer", "colour")):
        REGISTRIES[key]._builders.pop(name)


def test_default_yaml_stage_blocks_match_the_declarations():
    """Every variant block of default.yaml has exactly its stage's declared parameters and defaults."""
    default = OmegaConf.to_container(OmegaConf.load(DEFAULT_FILE))
    for key, registry in REGISTRIES.items():
        blocks = {k for k, v in default[key].items() if isinstance(v, dict)}  # `mixed` too: a registered source
        assert blocks == set(registry.names()), key
        for name in registry.names():
            params = declared(registry.get(name, key))
            _same(params, default[key][name], f"{key}.{name}")


def _same(params, block: dict, where: str) -> None:
    assert set(block) == set(params), f"{where}: keys {sorted(block)} != declared {sorted(params)}"
    for name, param in params.items():
        assert param.default is not inspect.Parameter.empty, f"{where}.{name}: declares no default"
        if param.block is not None:
            _same(param.block, block[name], f"{where}.{name}")
        else:
            assert block[name] == param.default, f"{where}.{name}: {block[name]!r} != declared {param.default!r}"


@pytest.mark.parametrize("override, fragment", [
    ("matcher.rim.alpha=1.5", "'matcher.rim.alpha' must be in [0, 1], got 1.5"),
    ("matcher.rim.divergence=kl2", "'matcher.rim.divergence': unknown 'kl2' (choose kl, js, l1)"),
    ("proposer.sam.model_type=vit_x", "unknown 'vit_x'"),
    ("segmenter.paint.background.probability.temperature=0", "must be positive, got 0"),
    ("logger=tensorbord", "'logger': unknown 'tensorbord' (choose csv, wandb, tensorboard"),
])
def test_config_checks_read_the_declarations(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(["experiment=smoke", override])
    assert fragment in str(info.value)


def test_a_new_matcher_and_featurizer_are_one_module(new_stages, smoke_root, tmp_path, capsys):
    """Registered by a module alone: their config blocks come from their declarations, their
    values are checked, and they run end to end on the smoke set."""
    cfg = load_config(["experiment=smoke", "matcher.name=nearest_mean", "featurizer.name=colour"])
    assert cfg.matcher.nearest_mean == {"scale": 2.0, "how": "cos"} and cfg.featurizer.colour.cell == 8
    with pytest.raises(ConfigError, match="'matcher.nearest_mean.how': unknown 'l2'"):
        load_config(["experiment=smoke", "matcher.name=nearest_mean", "matcher.nearest_mean.how=l2"])
    out = tmp_path / "run"
    assert main(["test", "experiment=smoke", f"data.root={smoke_root}", "matcher.name=nearest_mean",
                 "featurizer.name=colour", "featurizer.colour.cell=16", "cache_regions=false",
                 f"output_dir={out}"]) == 0
    assert (out / "metrics.json").is_file()


def test_plan_checks_a_new_featurizers_weights(new_stages, tmp_path, capsys):
    folder = tmp_path / "no-model"
    folder.mkdir()
    assert main(["plan", "experiment=smoke", "featurizer.name=colour", f"featurizer.colour.model={folder}"]) == 2
    err = capsys.readouterr().err
    assert f"featurizer.colour.model: '{folder}' is not a model folder (no config.json in it)" in err


def test_readme_gives_the_counts_these_tests_show():
    text = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    for count in ("a matcher is one module", "a featurizer one module (two with its backbone",
                  "a benchmark three files"):
        assert count in text, count


# A benchmark: a data module, a class file and an experiment file (here the smoke images in a new name).
NEW_BENCHMARK = '''
from pathlib import Path

from rim_bench.core.registry import DATASETS
from rim_bench.data.voc import VOCLayout


@DATASETS.register("my_benchmark")
class MyBenchmark(VOCLayout):
    subdir = "."
    default_classes = str(Path(__file__).with_name("my_benchmark.txt"))
'''


def test_a_new_benchmark_is_three_files(tmp_path, smoke_root, capsys):
    from rim_bench.data.classes import class_file

    (tmp_path / "my_benchmark.py").write_text(textwrap.dedent(NEW_BENCHMARK))
    (tmp_path / "my_benchmark.txt").write_text(class_file("smoke").read_text())
    experiment = tmp_path / "my_benchmark.yaml"
    experiment.write_text(f"extends: smoke\ndata:\n  name: my_benchmark\n  root: {smoke_root}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("my_benchmark")
        out = tmp_path / "run"
        assert main(["test", f"experiment={experiment}", "data.max_images=2", f"output_dir={out}"]) == 0
        assert (out / "metrics.json").is_file()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_benchmark", None)
        DATASETS._builders.pop("my_benchmark", None)


def test_the_declaration_index_is_what_the_code_declares():
    """declarations.json (read by the config checks without importing torch) equals the stages' signatures."""
    from rim_bench.core import declaration_index

    assert json.loads(declaration_index.INDEX_FILE.read_text()) == json.loads(
        declaration_index.text(declaration_index.from_registries(REGISTRIES))), \
        "stale: run `python -m rim_bench.core.registry` after changing a stage's signature"


@pytest.mark.parametrize("argv", [
    ["config", "experiment=smoke"], ["config", "experiment=smoke", "matcher.rim.temprature=1"],
    ["config", "experiment=smoke", "method=sclip"]])
def test_config_and_a_key_typo_load_no_torch(argv):
    """`rim-bench config experiment=smoke` and a typo with it answer from the declarations alone."""
    code = (f"import sys; from rim_bench.commands.cli import main; rc = main({argv!r}); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode in (0, 2), done.stderr  # 10+: torch was imported
