"""RIM's variants (class-level ranking, separate temperatures, temperature auto), each against a
brute-force float64 implementation written with loops straight from the definitions in docs/method.md."""

from __future__ import annotations

import math

import pytest
import torch
from rim_oracles import rim_reference_scores

from rim_bench.core.errors import ConfigError
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.rim import (
    RIMMatcher,
    bank_cosine_spread,
    class_signatures,
    log_ranking_distribution,
    pooled_class_logits,
)


def _bank(features: torch.Tensor, class_ids: list[int], num_classes: int) -> ReferenceBank:
    return ReferenceBank(features=features, class_ids=torch.tensor(class_ids),
                         subcategory_ids=torch.arange(len(class_ids)),
                         class_names=[f"c{i}" for i in range(num_classes)],
                         subcategory_names=[f"s{i}" for i in range(len(class_ids))])


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _pool(values: list[float], how: str) -> float:
    if how == "max":
        return max(values)
    if how == "mean":
        return sum(values) / len(values)
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def _softmax(logits: list[float]) -> list[float]:
    peak = max(logits)
    e = [math.exp(v - peak) for v in logits]
    return [v / sum(e) for v in e]


def _divergence(p: list[float], q: list[float], kind: str) -> float:
    if kind == "kl":
        return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)
    if kind == "l1":
        return sum(abs(a - b) for a, b in zip(p, q))
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return 0.5 * _divergence(p, m, "kl") + 0.5 * _divergence(q, m, "kl")


def _class_distribution(x: torch.Tensor, refs: torch.Tensor, ids: list[int], present: list[int], t: float,
                        how: str) -> list[float]:
    """softmax over the classes with references of pool_{m in c} cos(x, t_m) / T."""
    return _softmax([_pool([_cos(x, refs[m]) / t for m in range(len(ids)) if ids[m] == c], how) for c in present])


def brute_class_scores(regions, refs, ids, num_classes, t, t_q, kind, alpha, how):
    present = sorted(set(ids))
    # Class c's signature: the mean over its references of their class distributions.
    signature = {}
    for c in present:
        members = [_class_distribution(refs[m], refs, ids, present, t_q, how) for m in range(len(ids)) if ids[m] == c]
        signature[c] = [sum(col) / len(members) for col in zip(*members)]
    out = torch.full((len(regions), num_classes), float("-inf"), dtype=torch.float64)
    for r, x in enumerate(regions):
        p = _class_distribution(x, refs, ids, present, t, how)
        for c in present:
            pooled = _pool([_cos(x, refs[m]) for m in range(len(ids)) if ids[m] == c], how)
            out[r, c] = (1 - alpha) * -_divergence(p, signature[c], kind) + alpha * pooled
    return out


@pytest.mark.parametrize("kind", ["kl", "js", "l1"])
@pytest.mark.parametrize("how", ["max", "mean", "logsumexp"])
def test_class_level_ranking_equals_brute_force(kind, how):
    g = torch.Generator().manual_seed(3)
    refs = torch.randn(9, 5, generator=g, dtype=torch.float64)
    ids = [0, 0, 0, 2, 2, 3, 3, 3, 3]  # class 1 has no references
    regions = torch.randn(4, 5, generator=g, dtype=torch.float64)
    bank = _bank(refs, ids, 4)
    for t, t_q, alpha in ((0.1, None, 0.0), (0.05, 0.2, 0.3)):
        matcher = RIMMatcher(t, kind, alpha, how, ranking="class", ref_temperature=t_q)
        got = matcher(regions, bank)
        expected = brute_class_scores(regions, refs, ids, 4, t, t_q or t, kind, alpha, how)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
        assert torch.isneginf(got[:, 1]).all()


def test_class_level_logsumexp_distribution_is_the_class_marginal_of_the_reference_one():
    g = torch.Generator().manual_seed(0)
    refs, regions = torch.randn(8, 6, generator=g), torch.randn(3, 6, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    sim = torch.nn.functional.normalize(regions, dim=-1) @ torch.nn.functional.normalize(refs, dim=-1).T
    by_class = torch.log_softmax(pooled_class_logits(sim, ids, 3, 0.05, "logsumexp"), dim=-1).exp()
    marginal = torch.zeros(3, 3).index_add_(1, ids, log_ranking_distribution(sim, 0.05).exp())
    torch.testing.assert_close(by_class, marginal)


def test_class_signatures_stream_in_blocks():
    g = torch.Generator().manual_seed(1)
    refs, ids = torch.randn(30, 8, generator=g), torch.randint(0, 5, (30,), generator=g)
    whole = class_signatures(refs, ids, 6, 0.1, "max")
    torch.testing.assert_close(class_signatures(refs, ids, 6, 0.1, "max", block_elements=60), whole)
    assert torch.isneginf(whole[5]).all() and torch.allclose(whole[:5].exp().sum(1), torch.ones(5))


def brute_reference_scores(regions, refs, t, t_q, kind):
    """s(r, m) = −D(P_r at T ‖ Q_m at T_q), both over all K references."""
    k = len(refs)
    out = torch.empty(len(regions), k, dtype=torch.float64)
    for r, x in enumerate(regions):
        p = _softmax([_cos(x, refs[j]) / t for j in range(k)])
        for m in range(k):
            q = _softmax([_cos(refs[m], refs[j]) / t_q for j in range(k)])
            out[r, m] = -_divergence(p, q, kind)
    return out


@pytest.mark.parametrize("kind", ["kl", "js", "l1"])
def test_separate_temperatures_equal_brute_force(kind):
    g = torch.Generator().manual_seed(7)
    refs, regions = _randn(g, 7, 4), _randn(g, 3, 4)
    ids = [0, 0, 1, 1, 1, 2, 2]
    expected = brute_reference_scores(regions, refs, 0.1, 0.3, kind)
    got = RIMMatcher(0.1, kind, 0.0, "max", ref_temperature=0.3)(regions, _bank(refs, ids, 3))
    by_class = torch.full((3, 3), float("-inf"), dtype=torch.float64)
    for m, c in enumerate(ids):
        by_class[:, c] = torch.maximum(by_class[:, c], expected[:, m])
    torch.testing.assert_close(got, by_class, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(rim_reference_scores(regions, refs, 0.1, kind, 0.0, ref_temperature=0.3), expected,
                               rtol=1e-9, atol=1e-9)


def test_closed_form_kl_with_exclude_self_and_separate_temperatures_equals_pairwise():
    g = torch.Generator().manual_seed(11)
    refs, regions = _randn(g, 12, 6), _randn(g, 5, 6)
    ids = [i % 3 for i in range(12)]
    closed = RIMMatcher(0.02, "kl", 0.0, "mean", exclude_self=True, ref_temperature=0.1)(regions, _bank(refs, ids, 3))
    pairwise = rim_reference_scores(regions, refs, 0.02, "kl", 0.0, exclude_self=True, ref_temperature=0.1)
    expected = torch.stack([pairwise[:, [m for m in range(12) if ids[m] == c]].mean(1) for c in range(3)], dim=1)
    torch.testing.assert_close(closed, expected, rtol=1e-9, atol=1e-9)


def test_bank_cosine_spread_is_the_std_of_off_diagonal_cosines_without_a_k_by_k_buffer():
    g = torch.Generator().manual_seed(5)
    refs = torch.randn(50, 16, generator=g, dtype=torch.float64) + 0.5
    unit = torch.nn.functional.normalize(refs, dim=-1)
    cos = unit @ unit.T
    off = cos[~torch.eye(50, dtype=torch.bool)]
    exact = float(off.std(unbiased=False))
    assert bank_cosine_spread(refs) == pytest.approx(exact, rel=1e-10)
    assert bank_cosine_spread(refs, block_elements=120) == pytest.approx(exact, rel=1e-10)  # 2 rows at a time
    with pytest.raises(ConfigError, match="at least 2 references"):
        bank_cosine_spread(refs[:1])


def test_temperature_auto_follows_the_bank_and_means_the_same_for_a_scaled_spread():
    g = torch.Generator().manual_seed(9)
    refs, regions = _randn(g, 20, 8), _randn(g, 6, 8)
    bank = _bank(refs, [i % 4 for i in range(20)], 4)
    spread = bank_cosine_spread(refs)
    auto = RIMMatcher("auto", "kl", 0.0, "max", temperature_scale=0.3, ref_temperature="auto")
    fixed = RIMMatcher(0.3 * spread, "kl", 0.0, "max")
    torch.testing.assert_close(auto(regions, bank), fixed(regions, bank))
    assert auto.temperatures(bank) == pytest.approx((0.3 * spread, 0.3 * spread))
    # Only the regions' temperature auto: T_q stays as given.
    assert RIMMatcher("auto", "kl", 0.0, "max", ref_temperature=0.5).temperatures(bank)[1] == 0.5


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(temperature="hot"), "temperature: must be float > 0 or 'auto'"),
    (dict(ref_temperature=-1.0), "ref_temperature: must be positive, got -1.0"),
    (dict(ranking="pairs"), "ranking: unknown 'pairs'"),
    (dict(ranking="class", exclude_self=True), "exclude_self: applies to ranking=reference only"),
    (dict(temperature_scale=0.0), "temperature_scale: must be positive"),
])
def test_bad_variant_values_name_the_parameter(kwargs, fragment):
    from omegaconf import OmegaConf

    from rim_bench.core.errors import ConfigError
    from rim_bench.core.registry import MATCHERS, build_stage

    block = OmegaConf.create({"name": "rim", "rim": {"temperature": 0.1, "divergence": "kl", "alpha": 0.0,
                                                     "aggregation": "max", **kwargs}})
    with pytest.raises(ConfigError, match=f"matcher.rim.{fragment}"):
        build_stage(MATCHERS, block, "matcher")


def test_config_accepts_auto_for_the_temperature_only():
    from rim_bench.core.config import load_config

    cfg = load_config(["experiment=smoke", "matcher.rim.temperature=auto", "matcher.rim.ref_temperature=auto",
                       "matcher.rim.ranking=class"])
    assert cfg.matcher.rim.temperature == "auto" and cfg.matcher.rim.ranking == "class"
    with pytest.raises(ConfigError, match="matcher.rim.alpha"):
        load_config(["matcher.rim.alpha=auto"])


def test_variants_sweep_points_build_matchers():
    from rim_bench.commands.sweep import expand, load_sweep
    from rim_bench.core.config import as_overrides, load_config
    from rim_bench.core.registry import MATCHERS, build_stage

    points = expand(load_sweep("rim_variants"))
    assert {p["matcher.rim.ranking"] for p in points} == {"reference", "class"}
    assert "auto" in {p["matcher.rim.temperature"] for p in points}
    for point in points:
        matcher = build_stage(MATCHERS, load_config(["experiment=smoke", *as_overrides(point)]).matcher, "matcher")
        assert matcher.ranking == point["matcher.rim.ranking"]
        assert matcher.temperature == point["matcher.rim.temperature"]


def test_metrics_json_saves_the_temperature_auto_chose(tmp_path):
    """metrics.json's `resolved` holds the T and T_q that `auto` ran with: the same run at that
    fixed T scores the same, and a run with nothing left to `auto` resolves nothing."""
    import json

    from rim_bench.commands.cli import main

    def run(name: str, *overrides: str) -> dict:
        assert main(["test", "experiment=smoke", "data.max_images=3", f"cache_dir={tmp_path / 'cache'}",
                     *overrides, f"output_dir={tmp_path / name}"]) == 0
        return json.loads((tmp_path / name / "metrics.json").read_text())

    # A scale far from the default's T = 0.05, so that the mIoU tells the temperatures apart (84.4 vs 73.2).
    auto = run("auto", "matcher.rim.temperature=auto", "matcher.rim.temperature_scale=5")
    t = auto["resolved"]["matcher.rim.temperature"]
    assert auto["resolved"] == {"matcher.rim.temperature": t, "matcher.rim.ref_temperature": t}
    fixed = run("fixed", f"matcher.rim.temperature={t!r}")
    assert fixed["resolved"] == {} and fixed["mIoU"] == auto["mIoU"] != run("default")["mIoU"]
