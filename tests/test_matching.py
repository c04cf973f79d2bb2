"""The matchers on small cases computed by hand (with numpy as the independent check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rim_oracles import pairwise_divergence, rim_reference_scores

from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.baselines import CosineMatcher
from rim_bench.stages.matching.rim import (
    RIMMatcher,
    bank_normalizers,
    kl_reference_scores,
    log_ranking_distribution,
    log_relation_signatures,
)
from rim_bench.stages.matching.scores import aggregate_by_class


def _np_kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def test_divergences_by_hand():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    kl = pairwise_divergence(p.log(), q.log(), "kl")
    assert kl[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert kl[0, 1] == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    l1 = pairwise_divergence(p.log(), q.log(), "l1")
    assert l1[0].tolist() == pytest.approx([0.0, 0.8])
    m = np.array([0.7, 0.3])
    js = pairwise_divergence(p.log(), q.log(), "js")
    assert js[0, 1] == pytest.approx(0.5 * _np_kl(np.array([0.5, 0.5]), m) + 0.5 * _np_kl(np.array([0.9, 0.1]), m))


@pytest.mark.parametrize("kind", ["kl", "js", "l1"])
def test_divergence_matches_brute_force_and_chunking(kind):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(9, 7, generator=g, dtype=torch.float64), -1)
    pn, qn = p.numpy(), q.numpy()
    brute = np.zeros((5, 9))
    for i in range(5):
        for j in range(9):
            if kind == "kl":
                brute[i, j] = _np_kl(pn[i], qn[j])
            elif kind == "l1":
                brute[i, j] = np.abs(pn[i] - qn[j]).sum()
            else:
                mid = 0.5 * (pn[i] + qn[j])
                brute[i, j] = 0.5 * _np_kl(pn[i], mid) + 0.5 * _np_kl(qn[j], mid)
    got = pairwise_divergence(p.log(), q.log(), kind, chunk=2).numpy()
    np.testing.assert_allclose(got, brute, rtol=1e-9, atol=1e-12)


def test_rim_scores_by_hand():
    # Two orthogonal references; the region is reference 0 itself.
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    region = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    t = 0.5
    scores = rim_reference_scores(region, refs, temperature=t, divergence="kl", alpha=0.0)
    p = np.exp([1 / t, 0]) / np.exp([1 / t, 0]).sum()   # region ranks ref 0 first
    q1 = p[::-1]                                          # ref 1 ranks itself first
    assert scores[0, 0] == pytest.approx(0.0, abs=1e-12)  # same ranking as ref 0
    assert scores[0, 1] == pytest.approx(-_np_kl(p, q1))
    # alpha = 1 is the plain cosine.
    cos = rim_reference_scores(region, refs, temperature=t, divergence="kl", alpha=1.0)
    assert cos[0].tolist() == pytest.approx([1.0, 0.0])


def test_relation_signatures_rows_are_distributions():
    q = log_relation_signatures(torch.randn(6, 4), temperature=0.1).exp()
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    assert (q.argmax(1) == torch.arange(6)).all()  # each reference ranks itself first
    torch.testing.assert_close(log_ranking_distribution(torch.zeros(2, 3), 1.0).exp(), torch.full((2, 3), 1 / 3))


@pytest.mark.parametrize("temperature", [0.05, 0.02, 0.01])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_kl_in_float32_matches_float64_at_small_temperature(temperature, exclude_self):
    # At small T most of P and Q underflow; clamping probabilities before the log used to cut
    # the KL off (error 39 at T = 0.02). Log-probabilities keep float32 close to float64.
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(40, 16, generator=g, dtype=torch.float64)
    regions = refs[:6] + 0.05 * torch.randn(6, 16, generator=g, dtype=torch.float64)  # near their references
    exact = rim_reference_scores(regions, refs, temperature, "kl", 0.0, exclude_self)
    scale = exact.abs().max()
    pairwise = rim_reference_scores(regions.float(), refs.float(), temperature, "kl", 0.0, exclude_self)
    closed = kl_reference_scores(regions.float(), bank_normalizers(refs.float(), temperature), 0.0, exclude_self)
    for got in (pairwise, closed):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), exact, rtol=1e-3, atol=1e-4 * float(scale))


def _bank() -> ReferenceBank:
    # Class 0: two subcategories around +x; class 1: one reference at +y.
    feats = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 1.0]])
    return ReferenceBank(feats, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), ["a", "b"], ["a/1", "a/2", "b/1"])


@pytest.mark.parametrize("matcher", [
    RIMMatcher(temperature=0.1, divergence="kl", alpha=0.0, aggregation="max"),
    RIMMatcher(temperature=0.1, divergence="js", alpha=0.5, aggregation="mean"),
    RIMMatcher(temperature=0.1, divergence="l1", alpha=0.0, aggregation="logsumexp"),
    CosineMatcher(aggregation="max"),
])
def test_matchers_label_obvious_regions(matcher):
    regions = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, 0.0]])  # a, b, and a zero vector
    scores = matcher(regions, _bank())
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
    assert scores[:2].argmax(1).tolist() == [0, 1]


def test_cosine_matcher_by_hand():
    scores = CosineMatcher("max")(torch.tensor([[1.0, 0.0]]), _bank())
    assert scores[0].tolist() == pytest.approx([1 / np.sqrt(1.04), 0.0])


@pytest.mark.parametrize("kwargs, param", [
    (dict(temperature=0.0, divergence="kl", alpha=0.0, aggregation="max"), "temperature"),
    (dict(temperature=0.1, divergence="kl", alpha=1.5, aggregation="max"), "alpha"),
    (dict(temperature=0.1, divergence="kl", alpha=0.0, aggregation="median"), "aggregation"),
])
def test_rim_parameter_errors(kwargs, param):
    """Built from a config block, a value its declaration refuses names the key."""
    from omegaconf import OmegaConf

    from rim_bench.core.errors import ConfigError
    from rim_bench.core.registry import MATCHERS, build_stage

    with pytest.raises(ConfigError, match=rf"^matcher\.rim\.{param}: "):
        build_stage(MATCHERS, OmegaConf.create({"name": "rim", "rim": kwargs}), "matcher")


def test_random_matcher_depends_on_the_image_and_seed_not_on_call_order():
    from rim_bench.stages.matching.baselines import RandomMatcher

    bank = _bank()
    a, b = torch.randn(4, 2), torch.randn(3, 2)
    first = RandomMatcher(seed=0)
    in_order = [first(a, bank), first(b, bank)]
    reversed_order = RandomMatcher(seed=0)
    b_first = reversed_order(b, bank)
    assert torch.equal(reversed_order(a, bank), in_order[0]) and torch.equal(b_first, in_order[1])
    assert not torch.equal(RandomMatcher(seed=1)(a, bank), in_order[0])
    assert ((in_order[0] >= 0) & (in_order[0] < 1)).all() and in_order[0].shape == (4, 2)


@pytest.mark.parametrize("temperature", [0.02, 0.0105, 0.005])
def test_exclude_self_kl_stays_finite_when_one_reference_holds_all_the_mass(temperature):
    # The region is reference 0; every other reference is at cosine <= 0. At T <= 0.01 the
    # mass left after removing reference 0 is below float32's range (found by review: inf, NaN).
    refs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-0.8, 0.6, 0], [0, 0, 1.0]], dtype=torch.float64)
    exact = rim_reference_scores(refs[:1], refs, temperature, "kl", 0.0, exclude_self=True)
    got = rim_reference_scores(refs[:1].float(), refs.float(), temperature, "kl", 0.0, exclude_self=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), exact, rtol=1e-4, atol=1e-3)



def _random_bank(g: torch.Generator, k: int, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(K, D)`` float64 references in clusters (so some pairs are close) and their classes;
    the last classes have 1 reference each."""
    centres = torch.randn(k // 3 + 1, d, generator=g, dtype=torch.float64)
    refs = centres[torch.arange(k) % len(centres)] + 0.3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    class_ids = torch.cat([torch.arange(k - 3) % 4, torch.tensor([4, 5, 6])])
    return refs, class_ids


@pytest.mark.parametrize("temperature", [0.01, 0.02, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("block_elements", [7, 2**24])  # blocks of 1 row (K = 40) and the whole bank
def test_closed_form_kl_equals_the_pairwise_definition(temperature, exclude_self, block_elements):
    g = torch.Generator().manual_seed(int(temperature * 1000) + exclude_self)
    refs, class_ids = _random_bank(g, 40)
    regions = torch.cat([refs[:5] + 0.02 * torch.randn(5, 16, generator=g, dtype=torch.float64),  # near a reference
                         torch.randn(7, 16, generator=g, dtype=torch.float64), refs[-2:]])  # anywhere; on one
    normalizers = bank_normalizers(refs, temperature, block_elements)
    for alpha in (0.0, 0.3):
        pairwise = rim_reference_scores(regions, refs, temperature, "kl", alpha, exclude_self)
        closed = kl_reference_scores(regions, normalizers, alpha, exclude_self)
        # 1e-6 relative; near 0 (a region on its reference) relative to 1/T, the size of the terms that cancel.
        torch.testing.assert_close(closed, pairwise, rtol=1e-6, atol=1e-12 / temperature)
    bank = ReferenceBank(refs, class_ids, torch.arange(40), [str(c) for c in range(7)], [])
    by_class = RIMMatcher(temperature, "kl", 0.0, "max", exclude_self=exclude_self)(regions, bank)
    expected = aggregate_by_class(rim_reference_scores(regions, refs, temperature, "kl", 0.0, exclude_self),
                                  class_ids, 7, "max")
    torch.testing.assert_close(by_class, expected, rtol=1e-6, atol=1e-12 / temperature)


@pytest.mark.parametrize("temperature", [0.01, 0.1])
def test_bank_normalizers_equal_a_log_sum_exp_over_the_whole_matrix(temperature):
    # float32, with a zero vector and an isolated reference, whose sums without themselves
    # underflow at T = 0.01 and are redone exactly.
    g = torch.Generator().manual_seed(3)
    refs = torch.randn(30, 8, generator=g)
    refs[3] = 0.0
    refs[4] = -refs[5:].sum(0)  # opposite to the rest: every other cosine far below 1
    exact = torch.nn.functional.normalize(refs.double(), dim=-1)
    logits = exact @ exact.T / temperature
    got = bank_normalizers(refs, temperature, block_elements=64)
    torch.testing.assert_close(got.log_norm.double(), torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
    logits.fill_diagonal_(float("-inf"))
    torch.testing.assert_close(got.log_norm_others.double(), torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
    assert got.log_norm.dtype == torch.float32 and got.self_cosine[3] == 0


# Largest |error| against float64 seen on these cases: 0.010 (float16), 0.078 (bfloat16), mostly
# from rounding the features themselves; scores are up to ~30.
HALF_TOLERANCE = {torch.float32: 2e-3, torch.float16: 0.05, torch.bfloat16: 0.4}


def _half_case() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    refs, _ = _random_bank(g, 3000, d=64)
    return refs, refs[:50] + 0.1 * torch.randn(50, 64, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_closed_form_kl_with_half_precision_cosines(dtype, exclude_self):
    # As on a GPU with half features: cosines in half, distributions and L in float32.
    import dataclasses

    refs, regions = _half_case()
    exact = kl_reference_scores(regions, bank_normalizers(refs, 0.05), 0.0, exclude_self)
    normalizers = bank_normalizers(refs.to(dtype), 0.05, block_elements=2**20)
    normalizers = dataclasses.replace(normalizers, unit_fast=normalizers.unit.to(dtype))
    got = kl_reference_scores(regions.to(dtype), normalizers, 0.0, exclude_self)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=HALF_TOLERANCE[dtype])
    assert torch.equal(got.argmax(1), exact.argmax(1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_closed_form_kl_on_cuda_in_the_features_dtype(dtype, exclude_self):
    refs, regions = _half_case()
    exact = kl_reference_scores(regions, bank_normalizers(refs, 0.05), 0.0, exclude_self)
    normalizers = bank_normalizers(refs.to("cuda", dtype), 0.05, block_elements=2**20)
    assert normalizers.log_norm.dtype == torch.float32 and normalizers.unit_fast.dtype == dtype
    got = kl_reference_scores(regions.to("cuda", dtype), normalizers, 0.0, exclude_self)
    torch.testing.assert_close(got.double().cpu(), exact, rtol=0, atol=HALF_TOLERANCE[dtype])
