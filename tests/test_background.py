"""Background rules (rim_bench/stages/segmenter/background.py) on hand-made scores, each against
a value worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rim_bench.core.errors import ConfigError, ParamError
from rim_bench.stages.segmenter.background import (
    RULES,
    BackgroundRule,
    background_config,
    best_class_probability,
    calibrated_score,
    describe_background,
    region_area_fraction,
)

# Class 0 is background. Region 0: class 1 clearly best; region 1: classes 1 and 2 nearly tied;
# region 2: background's own references win.
SCORES = torch.tensor([[0.10, 0.90, 0.10], [0.10, 0.31, 0.30], [0.80, 0.20, 0.10]])
REGION_MAP = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 2]])  # areas 8/12, 3/12, 1/12


def _rule(rule: str, references: bool = True, **params: float) -> BackgroundRule:
    config = background_config(rule, **params)
    config["references"] = references
    return BackgroundRule(**config, background_id=0)


def test_class_rule_is_the_argmax():
    labels, best = _rule("class")(SCORES, REGION_MAP)
    assert labels.tolist() == [1, 1, 0]
    assert torch.allclose(best, torch.tensor([0.90, 0.31, 0.80]))


def test_probability_rule_matches_a_softmax_by_hand():
    # Region 1 at T = 0.1: exp(3.1) / (exp(1.0) + exp(3.1) + exp(3.0)) = 0.498...
    by_hand = math.exp(3.1) / (math.exp(1.0) + math.exp(3.1) + math.exp(3.0))
    assert best_class_probability(SCORES, 0.1)[1].item() == pytest.approx(by_hand, rel=1e-5)
    labels, _ = _rule("probability", temperature=0.1, threshold=0.5)(SCORES, REGION_MAP)
    assert labels.tolist() == [1, 0, 0]  # 0.498 < 0.5: the near tie becomes background
    labels, _ = _rule("probability", temperature=0.1, threshold=0.49)(SCORES, REGION_MAP)
    assert labels.tolist() == [1, 1, 0]


def test_calibrated_score_by_hand_and_invariant_to_the_score_scale():
    # Region 0: scores (0.1, 0.9, 0.1): mean 1.1/3, population std 0.8·√2/3; z = √2 = √(C − 1) → 1.
    assert calibrated_score(SCORES)[0].item() == pytest.approx(1.0, abs=1e-5)
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # z of the best = 1.5 / √1.25, bound √3
    assert calibrated_score(scores).item() == pytest.approx(1.5 / math.sqrt(1.25) / math.sqrt(3), rel=1e-5)
    assert torch.allclose(calibrated_score(-40.0 + 25.0 * SCORES), calibrated_score(SCORES), atol=1e-5)
    # Equal scores, one finite score, and classes without references (-inf) left out.
    assert calibrated_score(torch.tensor([[0.5, 0.5, 0.5], [float("-inf"), 1.0, float("-inf")]])).tolist() == [0, 0]
    with_empty = torch.tensor([[float("-inf"), 0.1, 0.9, 0.1]])
    assert calibrated_score(with_empty).item() == pytest.approx(calibrated_score(SCORES[:1]).item(), abs=1e-6)


def test_calibrated_rule():
    # Region 1, (0.10, 0.31, 0.30): mean 0.71/3, population std 0.0967, z = 0.758, / √2 = 0.536.
    mean = 0.71 / 3
    std = math.sqrt(((0.10 - mean) ** 2 + (0.31 - mean) ** 2 + (0.30 - mean) ** 2) / 3)
    assert calibrated_score(SCORES)[1].item() == pytest.approx((0.31 - mean) / std / math.sqrt(2), rel=1e-4)
    labels, _ = _rule("calibrated", threshold=0.8)(SCORES, REGION_MAP)
    assert labels.tolist() == [1, 0, 0]


def test_score_rule():
    labels, _ = _rule("score", threshold=0.5)(SCORES, REGION_MAP)
    assert labels.tolist() == [1, 0, 0]


def test_area_rule_uses_each_regions_share_of_the_image():
    assert region_area_fraction(REGION_MAP, 3).tolist() == pytest.approx([8 / 12, 3 / 12, 1 / 12])
    labels, _ = _rule("area", min_fraction=0.1)(torch.tensor([[0.0, 1.0, 0.0]] * 3), REGION_MAP)
    assert labels.tolist() == [1, 1, 0]  # only the 1-pixel region
    # Uncovered pixels (-1) count in the image's size; a region with no pixels has area 0.
    assert region_area_fraction(torch.tensor([[0, -1], [-1, -1]]), 2).tolist() == [0.25, 0.0]


def test_without_background_references_only_the_rule_gives_background():
    labels, best = _rule("probability", references=False, temperature=0.1, threshold=0.6)(SCORES, REGION_MAP)
    # Among classes 1 and 2 only: region 1 is a near tie (p = 0.525 < 0.6) and becomes background;
    # region 2 no longer takes background from its references but class 1 (p = 0.73).
    assert labels.tolist() == [1, 0, 1]
    assert best.tolist() == pytest.approx([0.90, 0.31, 0.20])
    with pytest.raises(ParamError, match="never give background"):
        _rule("class", references=False)


def test_no_background_class_leaves_labels_alone():
    for rule in RULES:
        config = background_config(rule)
        config["calibrated"]["threshold"] = 1.0  # would send (almost) every region to background
        labels, _ = BackgroundRule(**config, background_id=None)(SCORES, REGION_MAP)
        assert labels.tolist() == [1, 1, 0], rule


def test_bad_values_name_the_key():
    from omegaconf import OmegaConf

    from rim_bench.core.registry import SEGMENTERS, build_stage

    block = OmegaConf.create({"name": "paint", "paint": {"min_score": None, "uncovered": "none",
                                                         "background": background_config("nearest")}})
    with pytest.raises(ConfigError, match=r"segmenter\.paint\.background\.rule: unknown 'nearest'"):
        build_stage(SEGMENTERS, block, "segmenter", background_id=0)
    block.paint.background = background_config("probability", temperature=0.0)
    with pytest.raises(ConfigError, match=r"background\.probability\.temperature: must be positive"):
        build_stage(SEGMENTERS, block, "segmenter", background_id=0)
    block.paint.background = background_config("calibrated", threshold=1.5)
    with pytest.raises(ConfigError, match=r"background\.calibrated\.threshold: must be in \[0, 1\], got 1.5"):
        build_stage(SEGMENTERS, block, "segmenter", background_id=0)


def test_describe_names_the_rule_and_its_values():
    spec = {"name": "paint", "min_score": None, "background": background_config("probability")}
    assert describe_background(spec) == "probability (temperature=0.01, threshold=0.1)"
    assert describe_background({"name": "paint", "background": background_config("class")}) == "class"
    assert describe_background({"name": "other"}) == "-"


def test_background_sweep_covers_every_rule_with_valid_configs():
    from rim_bench.commands.sweep import expand, load_sweep
    from rim_bench.core.config import as_overrides, load_config

    points = expand(load_sweep("background"))
    assert {p["segmenter.paint.background.rule"] for p in points} == set(RULES)
    for point in points:  # each point is a valid config whose segmenter builds
        cfg = load_config(["experiment=smoke", *as_overrides(point)])
        assert cfg.segmenter.paint.background.rule == point["segmenter.paint.background.rule"]


@pytest.mark.slow
def test_background_sweep_runs_on_smoke_and_writes_the_table(tmp_path):
    from rim_bench.commands.cli import main

    small = ["data.max_images=2", "references.exemplars.n_subcategories=1",
             "references.exemplars.images_per_subcategory=1"]
    assert main(["sweep", "experiment=smoke", "sweep=background", *small, f"output_dir={tmp_path}"]) == 0
    table = (tmp_path / "sweep.md").read_text()
    for rule in RULES:
        assert f"| {rule} | rim |" in table and f"| {rule} | cosine |" in table
