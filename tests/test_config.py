"""Config loading, validation, hashing, and that every shipped config builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rim_bench.core.cache_layout import CacheLayout
from rim_bench.core.config import CONFIG_DIR, config_hash, load_config, resolve, stage_spec
from rim_bench.core.errors import ConfigError
from rim_bench.run.methods import PixelMethod, result_spec

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def test_layers_merge_in_order():
    cfg = load_config(["experiment=smoke", "proposer.superpixels.n_segments=10"])
    assert cfg.experiment == "smoke"
    assert cfg.data.name == "smoke"  # from the experiment file
    assert cfg.proposer.superpixels.n_segments == 10  # command line beats the file (48)
    assert cfg.matcher.rim.divergence == "kl"  # untouched default


def test_a_misspelt_stage_name_or_key_gets_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"unknown region proposer 'superpixel'; did you mean 'superpixels'\?"):
        load_config(["proposer.name=superpixel"])
    with pytest.raises(ConfigError, match=r"unknown config key 'pipline'; did you mean 'pipeline'\?"):
        load_config(["pipline=pixel"])
    with pytest.raises(ConfigError) as nothing_close:
        load_config(["proposer.name=watershed"])
    assert "did you mean" not in str(nothing_close.value)


def test_unknown_key_on_command_line_names_key_and_source():
    with pytest.raises(ConfigError, match=r"command line: unknown config key 'matcher\.rim\.temprature'; "
                                          r"did you mean 'matcher\.rim\.temperature'\?"):
        load_config(["matcher.rim.temprature=0.1"])


def test_unknown_key_in_experiment_file_names_the_file(tmp_path: Path):
    shutil.copy(CONFIG_DIR / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / "experiment").mkdir()
    bad = tmp_path / "experiment" / "bad.yaml"
    bad.write_text("data:\n  rooot: /x\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown config key 'data\.rooot'"):
        load_config(["experiment=bad"], config_dir=tmp_path)


@pytest.mark.parametrize("override, fragment", [
    ("proposer.superpixels.n_segments=abc", r"'proposer\.superpixels\.n_segments' must be int"),
    ("save_predictions=1", r"'save_predictions' must be bool"),
    ("matcher.rim.temperature=hot", r"'matcher\.rim\.temperature' must be float"),
    ("matcher=rim", r"'matcher' is a group of keys"),
])
def test_wrong_type_is_an_error_naming_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config([override])


def test_int_for_float_and_null_defaults_accept_values():
    cfg = load_config(["matcher.rim.temperature=1", "data.root=/some/where", "data.max_images=3"])
    assert cfg.matcher.rim.temperature == 1 and cfg.data.max_images == 3


def test_experiments_extend_others(tmp_path: Path):
    shutil.copy(CONFIG_DIR / "default.yaml", tmp_path / "default.yaml")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "method").mkdir()
    (tmp_path / "experiment" / "base.yaml").write_text("seed: 1\ndata:\n  name: voc21\n")
    (tmp_path / "method" / "m.yaml").write_text("seed: 2\nmatcher:\n  name: cosine\n")
    (tmp_path / "experiment" / "child.yaml").write_text("extends: [base, method/m]\nseed: 3\n")
    cfg = load_config(["experiment=child"], config_dir=tmp_path)
    assert (cfg.seed, cfg.data.name, cfg.matcher.name, cfg.experiment) == (3, "voc21", "cosine", "child")
    (tmp_path / "experiment" / "loop.yaml").write_text("extends: loop\n")
    with pytest.raises(ConfigError, match="extends itself: loop → loop"):
        load_config(["experiment=loop"], config_dir=tmp_path)


def test_rim_experiments_combine_benchmark_and_method():
    cfg = load_config(["experiment=rim_context59"])
    assert (cfg.data.name, cfg.references.diffusion.subcategories, cfg.proposer.name, cfg.matcher.name) == \
        ("context59", "context", "sam", "rim")


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"experiment 'nope' not found.*known experiments: .*smoke"):
        load_config(["experiment=nope"])


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(["smoke"])


def test_result_hash_is_stable_and_tracks_only_what_changes_results():
    base = config_hash(result_spec(resolve(load_config(["experiment=smoke"]))))

    def hash_with(*overrides: str) -> str:
        return config_hash(result_spec(resolve(load_config(["experiment=smoke", *overrides]))))

    assert hash_with() == base
    # Output, logging and loader settings do not change a result...
    assert hash_with("output_dir=/elsewhere", "data.num_workers=4", "logger=wandb") == base
    # ...nor does a variant that is not selected.
    assert hash_with("matcher.cosine.aggregation=mean") == base
    # What does change a result changes the hash.
    assert hash_with("matcher.rim.temperature=0.5") != base
    assert hash_with("matcher.name=cosine") != base
    assert hash_with("seed=1") != base
    assert hash_with("trainer.precision=16-mixed") != base
    # A mixed bank's sources' parameters count, though "mixed" names neither as its variant.
    mixed = ("references.name=mixed", "references.diffusion.subcategories=voc")
    assert hash_with(*mixed) != hash_with(*mixed, "references.diffusion.attn_threshold=0.2")


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})


def test_stage_spec_selects_the_named_variant():
    cfg = resolve(load_config(["experiment=smoke", "matcher.name=cosine"]))
    assert stage_spec(cfg.matcher, "matcher") == {"name": "cosine", "aggregation": "max"}


TINY = ["featurizer.dinov2.model=tiny", "featurizer.clip.model=tiny", "proposer.sam.model_type=tiny",
        "pixel.clip.model=tiny", "pixel.clip.proxy_model=tiny"]
# Every shipped config file as the layers that use it: experiments alone; each method (method=NAME)
# over every benchmark; each shared piece (real/) as a layer; each sweep's first and last point.
BENCHMARKS = ("voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff171", "ade20k", "cityscapes")
SHIPPED = (
    [(f"experiment/{e}", [f"experiment={e}"], []) for e in EXPERIMENTS]
    + [(f"method/{p.stem}/{b}", [f"experiment={b}", f"method={p.stem}"], [])
       for p in sorted((CONFIG_DIR / "method").glob("*.yaml")) for b in BENCHMARKS]
    + [(f"real/{p.stem}", ["experiment=voc21"], [f"real/{p.stem}"])
       for p in sorted((CONFIG_DIR / "real").glob("*.yaml"))]
    + [(f"sweep/{p.stem}", ["experiment=rim_voc21"], []) for p in sorted((CONFIG_DIR / "sweep").glob("*.yaml"))]
)


@pytest.mark.parametrize("name, overrides, layers", SHIPPED, ids=[s[0] for s in SHIPPED])
def test_every_shipped_config_builds(name: str, overrides: list[str], layers: list[str], tmp_path: Path):
    """Every stage and the reference source of each shipped config build (weights: tiny stand-ins)."""
    from rim_bench.commands.sweep import expand, load_sweep
    from rim_bench.core.config import as_overrides
    from rim_bench.run.assembly import Assembly
    from rim_bench.run.datamodule import class_list
    from rim_bench.stages.references.sources import build_references

    configs = []
    if name.startswith("sweep/"):
        points = expand(load_sweep(name.split("/")[1]))
        configs = [load_config([*overrides, *as_overrides(p), *TINY, f"references.exemplars.root={tmp_path}"])
                   for p in (points[0], points[-1])]
    else:
        configs = [load_config([*overrides, *TINY, f"references.exemplars.root={tmp_path}"], layers=layers)]
    for cfg in configs:
        assembly = Assembly(cfg)
        assert OmegaConf.to_yaml(assembly.cfg)  # fully resolvable
        method = assembly.method()
        if isinstance(method, PixelMethod):  # a peer method: its model, and its class file against the benchmark's
            vocabulary = class_list(assembly.cfg.data)
            names, query_class = method._stage().query_names(vocabulary)
            assert max(query_class) + 1 == len(vocabulary) and len(names) >= len(vocabulary)
            continue
        pipeline = assembly.pipeline([names[0] for names in class_list(assembly.cfg.data)])
        assert pipeline.featurizer.feature_dim > 0
        build_references(assembly.cfg.references)
        assert CacheLayout.of(assembly.cfg).specs["references"]["name"] == assembly.cfg.references.name


def test_tiny_model_settings_stay_out_of_keys_for_real_models():
    def keys(*overrides: str) -> tuple[str, str]:
        cfg = resolve(load_config(["experiment=smoke", *overrides]))
        return CacheLayout.of(cfg).regions_key(), config_hash(result_spec(cfg))

    real = ("proposer.name=sam", "featurizer.dinov2.model=facebook/dinov2-small")
    # The seed initialises only the random tiny models: with real weights the regions stay valid...
    assert keys(*real, "seed=1")[0] == keys(*real)[0]
    # ...while with the tiny models (or a real seed-dependent setting) they do not.
    assert keys("seed=1")[0] != keys()[0]
    assert keys(*real, "proposer.sam.model_type=tiny", "seed=1")[0] != keys(*real, "proposer.sam.model_type=tiny")[0]


def test_configs_ship_inside_the_package():
    """pyproject's package data (``configs/*.yaml``, ``configs/*/*.yaml``) must reach every config."""
    import rim_bench

    assert CONFIG_DIR.parent == Path(rim_bench.__file__).resolve().parent
    files = [p.relative_to(CONFIG_DIR) for p in CONFIG_DIR.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".yaml" and len(p.parts) <= 2 for p in files), files


@pytest.mark.slow
def test_a_wheel_holds_every_config_and_the_published_numbers(tmp_path: Path):
    import subprocess
    import sys
    import zipfile

    repo = CONFIG_DIR.parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(repo),
                    "-w", str(tmp_path)], check=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("rim_bench-*.whl"))).namelist())
    expected = {f"rim_bench/configs/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert expected <= names, sorted(expected - names)
    assert "rim_bench/data/published.yaml" in names
