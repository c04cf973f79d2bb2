"""RIM's pairwise KL: the definition the library's closed form (`kl_reference_scores`) is tested against.

The library computes KL in closed form only; JS and L1, which have none, it computes pairwise
(`rim.pairwise_divergence`, `rim.excluding_self_divergence`, `rim.rim_reference_scores`). The
functions here take the same arguments and add KL, computed pairwise, to them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rim_bench.stages.matching import rim
from rim_bench.stages.matching.scores import cosine_matrix


def pairwise_divergence(log_p: Tensor, log_q: Tensor, kind: str, chunk: int = 256) -> Tensor:
    """``(N, K)``, ``(M, K)`` log-distributions → ``(N, M)`` D(P_i ‖ Q_m), KL included."""
    if kind != "kl":
        return rim.pairwise_divergence(log_p, log_q, kind, chunk)
    # Σ_j p log p − Σ_j p log q: the cross term is one matrix product.
    p = log_p.exp()
    neg_entropy = torch.where(p > 0, p * log_p, 0.0).sum(-1, keepdim=True)
    return (neg_entropy - p @ log_q.T).clamp_min(0.0)  # the two terms cancel to ~1e-5 below 0 at tiny T


def excluding_self_divergence(log_p: Tensor, log_q: Tensor, self_index: Tensor, kind: str) -> Tensor:
    """`rim.excluding_self_divergence`, KL included: ``(N, M)`` D(P_i without m, renormalized ‖ Q_m)."""
    if kind != "kl":
        return rim.excluding_self_divergence(log_p, log_q, self_index, kind)
    top = log_p.argmax(-1, keepdim=True)  # (N, 1): each region's top reference
    log_p_ex = log_p.scatter(-1, top, float("-inf"))  # without it
    log_others = torch.logsumexp(log_p_ex, dim=-1, keepdim=True)  # (N, 1): log(1 − p_top)
    is_top = self_index[None] == top  # (N, M)
    log_rest = rim._log_rest(log_p, self_index, is_top, log_others)  # (N, M)
    rows = torch.arange(len(self_index), device=log_q.device)
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


def rim_reference_scores(regions: Tensor, references: Tensor, temperature: float, divergence: str, alpha: float,
                         exclude_self: bool = False, max_elements: int = 2**24, signatures: Tensor | None = None,
                         ref_temperature: float | None = None) -> Tensor:
    """`rim.rim_reference_scores`, KL included: ``(N, D)`` regions, ``(K, D)`` references → ``(N, K)``
    scores from every pair's divergence (KL's signatures all at once: the tests' banks are small)."""
    if divergence != "kl":
        return rim.rim_reference_scores(regions, references, temperature, divergence, alpha, exclude_self,
                                        max_elements, signatures, ref_temperature)
    similarity = cosine_matrix(regions, references)
    log_p = rim.log_ranking_distribution(similarity, temperature)
    references = references.to(similarity.device)
    if signatures is None:
        signatures = rim.log_relation_signatures(references, ref_temperature or temperature, exclude_self)
    log_q = signatures.to(log_p.dtype)
    if exclude_self:
        relation = excluding_self_divergence(log_p, log_q, torch.arange(len(references), device=log_q.device), "kl")
    else:
        relation = pairwise_divergence(log_p, log_q, "kl")
    return (1.0 - alpha) * -relation + alpha * similarity
