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
* ``exclude_self`` (off by default): Q_m leaves out reference m itself (its own
  similarity, 1, dominates Q_m at small T), and P_r is compared with it on the same K - 1
  references, renormalized. Then a region matches m by how it relates to the *other*
  references (m's class mates and confusers), not by resembling m.

Defaults (ours): T = 0.05, KL, α = 0, max, exclude_self off. Cost: O(N K D + K² D + N K²)
time, O(N K + chunk K) memory: the K × K signatures are streamed in chunks of references,
or computed once per bank and kept when K is small enough (`RIMMatcher.cache_limit`).

A region of class c should rank c's references (and the classes c is usually confused
with) the way c's own references do; comparing whole distributions makes inter-class
relations and the spread of subcategories count, where a single cosine does not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rim_bench.errors import ParamError
from rim_bench.matching.scores import AGGREGATIONS, aggregate_by_class, cosine_matrix
from rim_bench.registry import MATCHERS
from rim_bench.types import ReferenceBank

DIVERGENCES = ("kl", "js", "l1")
_LOG2 = math.log(2.0)


def log_ranking_distribution(similarity: Tensor, temperature: float) -> Tensor:
    """``(N, K)`` similarities → ``(N, K)`` log P: each row a log-softmax at `temperature`.

    Distributions are carried as log-probabilities throughout: at small T most entries of
    P and Q underflow, and ``log(q.clamp_min(eps))`` would cut the KL divergence off.
    """
    return torch.log_softmax(similarity / temperature, dim=-1)


def log_relation_signatures(references: Tensor, temperature: float, exclude_self: bool = False,
                            rows: Tensor | None = None) -> Tensor:
    """``(K, D)`` reference features → ``(M, K)`` log Q: row m is reference m's ranking of all
    references (of all others, with ``-inf`` at m itself, if `exclude_self`).

    Args:
        rows: ``(M,)`` the references whose signatures to compute; None = all K.
    """
    rows = torch.arange(len(references), device=references.device) if rows is None else rows
    logits = cosine_matrix(references[rows], references) / temperature
    if exclude_self:
        logits[torch.arange(len(rows), device=logits.device), rows] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def _kl_terms(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Σ_j a_j (log a_j − log b_j) over the last dim, with 0 · log 0 = 0; shapes broadcast."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), 0.0).sum(-1)


def _js(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Jensen-Shannon divergence (natural log) of broadcast log-distributions."""
    log_mid = torch.logaddexp(log_a, log_b) - _LOG2
    return 0.5 * (_kl_terms(log_a, log_mid) + _kl_terms(log_b, log_mid))


def pairwise_divergence(log_p: Tensor, log_q: Tensor, kind: str, chunk: int = 256) -> Tensor:
    """D(P_i ‖ Q_m) for every pair of rows.

    Args:
        log_p: ``(N, K)`` log-distributions (each row's exp sums to 1).
        log_q: ``(M, K)`` log-distributions.
        kind: ``kl`` (KL(P‖Q)), ``js`` (Jensen-Shannon, natural log) or ``l1`` (sum of |P − Q|).
        chunk: rows of `log_q` per step for ``js``, which needs an ``(N, chunk, K)`` buffer.
    Returns:
        ``(N, M)`` divergences, ≥ 0, zero where the rows are equal.
    """
    if kind == "kl":
        # Σ_j p log p − Σ_j p log q: the cross term is one matrix product.
        p = log_p.exp()
        neg_entropy = torch.where(p > 0, p * log_p, 0.0).sum(-1, keepdim=True)
        return (neg_entropy - p @ log_q.T).clamp_min(0.0)  # the two terms cancel to ~1e-5 below 0 at tiny T
    if kind == "l1":
        return torch.cdist(log_p.exp(), log_q.exp(), p=1)
    if kind == "js":
        parts = [_js(log_p[:, None], log_q[None, start:start + chunk]) for start in range(0, log_q.shape[0], chunk)]
        return torch.cat(parts, dim=1) if parts else log_p.new_zeros(log_p.shape[0], 0)
    raise ValueError(f"unknown divergence '{kind}' (choose {', '.join(DIVERGENCES)})")


def _log_rest(log_p: Tensor, self_index: Tensor, is_top: Tensor, log_others: Tensor) -> Tensor:
    """``(N, M)`` log(1 − p_m) for m = `self_index`, without cancellation.

    For m other than the row's top entry p_m < 1/2 and log1p(−p_m) is exact; for the top entry
    (`is_top`), which may hold all of the mass in float32, it is `log_others`, the log-sum-exp
    of the other entries.
    """
    p_self = log_p[:, self_index].exp()
    return torch.where(is_top, log_others, torch.log1p(-p_self.clamp_max(0.5)))


def excluding_self_divergence(log_p: Tensor, log_q: Tensor, self_index: Tensor, kind: str) -> Tensor:
    """D(P_i without entry m, renormalized ‖ Q_m) where Q_m has no mass on its own entry m.

    Args:
        log_p: ``(N, K)`` log ranking distributions.
        log_q: ``(M, K)`` log signatures with ``log_q[i, self_index[i]] == -inf``.
        self_index: ``(M,)`` the reference each row of `log_q` belongs to.
    Returns:
        ``(N, M)``.
    """
    top = log_p.argmax(-1, keepdim=True)  # (N, 1): each region's top reference
    log_p_ex = log_p.scatter(-1, top, float("-inf"))  # without it
    log_others = torch.logsumexp(log_p_ex, dim=-1, keepdim=True)  # (N, 1): log(1 − p_top)
    is_top = self_index[None] == top  # (N, M)
    log_rest = _log_rest(log_p, self_index, is_top, log_others)  # (N, M)
    rows = torch.arange(len(self_index), device=log_q.device)
    if kind == "kl":
        # With p'_j = p_j / (1 − p_m) for j ≠ m:
        # KL(p' ‖ q_m) = [Σ_{j≠m} p_j log p_j − Σ_{j≠m} p_j log q_mj] / (1 − p_m) − log(1 − p_m);
        # the second sum is a matrix product once log q_mm is set to 0.
        p = log_p.exp()
        p_log_p = torch.where(p > 0, p * log_p, 0.0)
        log_q = log_q.clone()
        log_q[rows, self_index] = 0.0
        own = p_log_p.sum(-1, keepdim=True) - p_log_p[:, self_index]
        general = (own - p @ log_q.T) * torch.exp(-log_rest) - log_rest
        # When m is the row's top reference, 1 − p_m can be far below float32's range and the
        # p_j above underflow: renormalize without m in log space instead.
        log_p_ex = log_p_ex - log_others
        p_ex = log_p_ex.exp()
        direct = torch.where(p_ex > 0, p_ex * log_p_ex, 0.0).sum(-1, keepdim=True) - p_ex @ log_q.T
        return torch.where(is_top, direct, general).clamp_min(0.0)
    log_p_rest = log_p[:, None, :] - log_rest[..., None]  # (N, M, K)
    is_self = torch.zeros(len(self_index), log_p.shape[1], dtype=torch.bool, device=log_p.device)
    is_self[rows, self_index] = True
    log_p_rest = log_p_rest.masked_fill(is_self[None], float("-inf"))
    if kind == "l1":
        return (log_p_rest.exp() - log_q.exp()[None]).abs().sum(-1)
    return _js(log_p_rest, log_q[None])


def rim_reference_scores(
    regions: Tensor, references: Tensor, temperature: float, divergence: str, alpha: float,
    exclude_self: bool = False, max_elements: int = 2**24, signatures: Tensor | None = None,
) -> Tensor:
    """``(N, D)`` regions, ``(K, D)`` references → ``(N, K)`` scores s(r, m) (see the module doc).

    The signatures Q_m are computed for a chunk of references at a time, so memory stays
    O(N K + chunk K); `max_elements` bounds a chunk's largest buffer. `signatures`, the
    ``(K, K)`` result of `log_relation_signatures` for these references, skips that work.
    """
    similarity = cosine_matrix(regions, references)
    log_p = log_ranking_distribution(similarity, temperature)
    references = references.to(similarity.device)
    n, k = log_p.shape
    elementwise = divergence == "js" or (exclude_self and divergence != "kl")
    chunk = max(1, max_elements // max(1, (n if elementwise else 1) * k))
    relation = []
    for start in range(0, k, chunk):
        index = torch.arange(start, min(k, start + chunk), device=references.device)
        if signatures is not None:
            log_q = signatures[index].to(log_p.dtype)
        else:
            log_q = log_relation_signatures(references, temperature, exclude_self, rows=index)
        if exclude_self:
            relation.append(excluding_self_divergence(log_p, log_q, index, divergence))
        else:
            relation.append(pairwise_divergence(log_p, log_q, divergence))
    scores = -torch.cat(relation, dim=1) if relation else similarity.new_zeros(n, 0)
    return (1.0 - alpha) * scores + alpha * similarity


@MATCHERS.register("rim")
class RIMMatcher:
    """Relation-aware matching of regions to a reference bank.

    Args:
        temperature: softmax temperature T of the ranking distributions.
        divergence: ``kl``, ``js`` or ``l1``.
        alpha: weight of the direct cosine in the score, in [0, 1].
        aggregation: how a class pools its references' scores: ``max``, ``mean``, ``logsumexp``.
        exclude_self: leave each reference out of its own signature (see the module doc).
        cache_limit: keep the bank's signatures between calls for banks of at most this many references.
    """

    def __init__(self, temperature: float, divergence: str, alpha: float, aggregation: str,
                 exclude_self: bool = False, cache_limit: int = 8192) -> None:
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
        self.exclude_self = exclude_self
        self.cache_limit = cache_limit
        self._signatures: tuple[Tensor, Tensor] | None = None  # (bank features, their log signatures)

    def _bank_signatures(self, bank: ReferenceBank) -> Tensor | None:
        """The bank's ``(K, K)`` log signatures, computed once per bank while K ≤ `cache_limit`
        (256 MB at the default); larger banks stream them for every image."""
        if len(bank) > self.cache_limit:
            return None
        if self._signatures is None or self._signatures[0] is not bank.features:
            self._signatures = (bank.features, log_relation_signatures(bank.features, self.temperature, self.exclude_self))
        return self._signatures[1]

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)`` class scores."""
        if len(bank) < 2 and self.exclude_self:
            raise ValueError("exclude_self needs at least 2 references in the bank")
        scores = rim_reference_scores(
            region_features, bank.features, self.temperature, self.divergence, self.alpha, self.exclude_self,
            signatures=self._bank_signatures(bank),
        )
        return aggregate_by_class(scores, bank.class_ids, bank.num_classes, self.aggregation)
