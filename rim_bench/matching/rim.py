"""Relation-aware intra-modal matching (RIM): our reconstruction, not the paper's code.

The paper (CVPR 2024, arXiv 2404.00262) describes matching a region to references by
comparing *ranking distributions* rather than single similarities, but prints no
equations. This module is our reconstruction; every choice below is a config value
(`matcher.rim.*`), and the defaults are ours.

With region feature f_r, reference features t_1..t_K and temperature T:

* the region's ranking distribution over all references
      P_r = softmax_j( cos(f_r, t_j) / T )                                 (K,)
* each reference's relation signature: how *it* ranks all references
      Q_m = softmax_j( cos(t_m, t_j) / T )                                 (K,)
* the region-to-reference score
      s(r, m) = (1 - α) · ( −D(P_r ‖ Q_m) ) + α · cos(f_r, t_m)
  with D ∈ {KL, JS, L1}; α = 0 is pure relation matching, α = 1 the plain cosine.
* class scores pool s(r, m) over each class's references by max, mean or log-sum-exp.

A region of class c should rank c's references (and the classes c is usually confused
with) the way c's own references do; comparing whole distributions makes inter-class
relations and the spread of subcategories count, where a single cosine does not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rim_bench.errors import ParamError
from rim_bench.matching.scores import AGGREGATIONS, aggregate_by_class, cosine_matrix
from rim_bench.registry import MATCHERS
from rim_bench.types import ReferenceBank

DIVERGENCES = ("kl", "js", "l1")
_EPS = 1e-12


def ranking_distribution(similarity: Tensor, temperature: float) -> Tensor:
    """``(N, K)`` similarities → ``(N, K)`` rows that sum to 1 (softmax at `temperature`)."""
    return torch.softmax(similarity / temperature, dim=-1)


def relation_signatures(references: Tensor, temperature: float) -> Tensor:
    """``(K, D)`` reference features → ``(K, K)``: row m is Q_m, reference m's ranking of all."""
    return ranking_distribution(cosine_matrix(references, references), temperature)


def pairwise_divergence(p: Tensor, q: Tensor, kind: str, chunk: int = 256) -> Tensor:
    """D(P_i ‖ Q_m) for every pair of rows.

    Args:
        p: ``(N, K)`` distributions (rows sum to 1).
        q: ``(M, K)`` distributions.
        kind: ``kl`` (KL(P‖Q)), ``js`` (Jensen-Shannon, natural log) or ``l1`` (sum of |P − Q|).
        chunk: rows of `q` per step for ``js``, which needs an ``(N, chunk, K)`` buffer.
    Returns:
        ``(N, M)`` divergences, ≥ 0, zero where the rows are equal.
    """
    if kind == "kl":
        # Σ_j p log p − Σ_j p log q: the cross term is one matrix product.
        neg_entropy = (p * torch.log(p.clamp_min(_EPS))).sum(-1, keepdim=True)
        return neg_entropy - p @ torch.log(q.clamp_min(_EPS)).T
    if kind == "l1":
        return torch.cdist(p, q, p=1)
    if kind == "js":
        parts = []
        for start in range(0, q.shape[0], chunk):
            qc = q[start:start + chunk][None]  # (1, M', K)
            pc = p[:, None]  # (N, 1, K)
            mid = 0.5 * (pc + qc)
            log_mid = torch.log(mid.clamp_min(_EPS))
            kl_p = (pc * (torch.log(pc.clamp_min(_EPS)) - log_mid)).sum(-1)
            kl_q = (qc * (torch.log(qc.clamp_min(_EPS)) - log_mid)).sum(-1)
            parts.append(0.5 * (kl_p + kl_q))
        return torch.cat(parts, dim=1) if parts else p.new_zeros(p.shape[0], 0)
    raise ValueError(f"unknown divergence '{kind}' (choose {', '.join(DIVERGENCES)})")


def rim_reference_scores(
    regions: Tensor, references: Tensor, temperature: float, divergence: str, alpha: float
) -> Tensor:
    """``(N, D)`` regions, ``(K, D)`` references → ``(N, K)`` scores s(r, m) (see the module doc)."""
    similarity = cosine_matrix(regions, references)
    p = ranking_distribution(similarity, temperature)
    q = relation_signatures(references, temperature)
    relation = -pairwise_divergence(p, q, divergence)
    return (1.0 - alpha) * relation + alpha * similarity


@MATCHERS.register("rim")
class RIMMatcher:
    """Relation-aware matching of regions to a reference bank.

    Args:
        temperature: softmax temperature T of the ranking distributions.
        divergence: ``kl``, ``js`` or ``l1``.
        alpha: weight of the direct cosine in the score, in [0, 1].
        aggregation: how a class pools its references' scores: ``max``, ``mean``, ``logsumexp``.
    """

    def __init__(self, temperature: float, divergence: str, alpha: float, aggregation: str) -> None:
        if temperature <= 0:
            raise ParamError("temperature", f"must be positive, got {temperature}")
        if divergence not in DIVERGENCES:
            raise ParamError("divergence", f"unknown '{divergence}' (choose {', '.join(DIVERGENCES)})")
        if not 0.0 <= alpha <= 1.0:
            raise ParamError("alpha", f"must be in [0, 1], got {alpha}")
        if aggregation not in AGGREGATIONS:
            raise ParamError("aggregation", f"unknown '{aggregation}' (choose {', '.join(AGGREGATIONS)})")
        self.temperature = temperature
        self.divergence = divergence
        self.alpha = alpha
        self.aggregation = aggregation

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)`` class scores."""
        scores = rim_reference_scores(region_features, bank.features, self.temperature, self.divergence, self.alpha)
        return aggregate_by_class(scores, bank.class_ids, bank.num_classes, self.aggregation)
