"""Relation-aware intra-modal matching (RIM): our reconstruction, not the paper's code.

The paper (CVPR 2024, arXiv 2404.00262) describes matching a region to references by
comparing *ranking distributions* rather than single similarities; public listings count
10 equations in it, which we could not read. This module is our reconstruction; every
choice below is a config value (`matcher.rim.*`), and the defaults are ours.

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

Variants (other readings of "ranking distribution", all ours):

* ``ref_temperature``: Q_m at its own temperature T_q (null: T_q = T).
* ``temperature: auto`` (and ``ref_temperature: auto``): T = ``temperature_scale`` × the
  standard deviation of the bank's off-diagonal cosines (`bank_cosine_spread`, streamed in
  blocks, no K × K buffer), so one setting means the same sharpness for DINOv2-S/B/L and
  CLIP, whose cosines have different spreads.
* ``ranking: class``: distributions over *classes* instead of references (the abstract's
  "inter-class relationships"). The region's P_r^cls = softmax_c(pool_{m ∈ c} cos(f_r, t_m) / T),
  pooled by ``aggregation`` (``logsumexp`` makes it the class marginal of P_r); each reference's
  Q_m^cls the same from t_m at T_q; class c's signature the mean of its references'
  Q̄_c = mean_{m ∈ c} Q_m^cls; S(r, c) = (1 − α)(−D(P_r^cls ‖ Q̄_c)) + α · pool_{m ∈ c} cos(f_r, t_m).
  Cost O(N K D + K² D) with O(N K + block K + C²) memory (`class_signatures`).

Defaults (ours): T = 0.05, KL, α = 0, max, exclude_self off, reference ranking, T_q = T.

Cost. KL (with or without exclude_self) goes through a closed form (docs/method.md):
      −KL(P_r ‖ Q_m) = H(P_r) + (1/T) · t̂_m · p̄_r − L_m,   p̄_r = Σ_j P_r(j) t̂_j,
      L_m = log Σ_k exp(cos(t_m, t_k) / T),
so an image costs O(N K D) (one softmax and two products, as cheap as a few cosine
matchings) and a bank O(K² D) once, for its K log-normalizers L (`bank_normalizers`, which
streams the K × K similarities in blocks: O(K + block · K) memory). JS and L1 have no such
form: they compare P_r with every Q_m, O(N K D + K² D + N K²) per image, streaming the
signatures in chunks or keeping them per bank when K is small (`RIMMatcher.cache_limit`).
`rim_reference_scores` is that pairwise definition for JS and L1; KL's, the reference the
closed form is tested against, is in the tests (tests/rim_oracles.py).

A region of class c should rank c's references (and the classes c is usually confused
with) the way c's own references do; comparing whole distributions makes inter-class
relations and the spread of subcategories count, where a single cosine does not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from rim_bench.core.cache_files import DamagedCacheError, load_tensors, save_tensors
from rim_bench.core.errors import ConfigError, ParamError
from rim_bench.core.io import set_aside
from rim_bench.core.params import GIVEN, POSITIVE, Range
from rim_bench.core.registry import MATCHERS
from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.scores import Aggregation, aggregate_by_class, cosine_matrix

log = logging.getLogger(__name__)

Divergence = Literal["kl", "js", "l1"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)
AUTO = "auto"  # a temperature set from each bank's cosine spread
# A softmax temperature: positive, or "auto".
Temperature = Annotated[float, POSITIVE] | Literal["auto"]
STORE_NORMALIZERS_FROM = 20_000  # references: ~4 s of precompute on one CPU core (100k: ~100 s)
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
    """D(P_i ‖ Q_m) for every pair of rows (KL has its closed form, `kl_reference_scores`).

    Args:
        log_p: ``(N, K)`` log-distributions (each row's exp sums to 1).
        log_q: ``(M, K)`` log-distributions.
        kind: ``js`` (Jensen-Shannon, natural log) or ``l1`` (sum of |P − Q|).
        chunk: rows of `log_q` per step for ``js``, which needs an ``(N, chunk, K)`` buffer.
    Returns:
        ``(N, M)`` divergences, ≥ 0, zero where the rows are equal.
    """
    if kind == "l1":
        return torch.cdist(log_p.exp(), log_q.exp(), p=1)
    if kind == "js":
        parts = [_js(log_p[:, None], log_q[None, start:start + chunk]) for start in range(0, log_q.shape[0], chunk)]
        return torch.cat(parts, dim=1) if parts else log_p.new_zeros(log_p.shape[0], 0)
    raise ValueError(f"pairwise divergence '{kind}': js or l1 (kl is computed in closed form: kl_reference_scores)")


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
        kind: ``js`` or ``l1`` (as `pairwise_divergence`).
    Returns:
        ``(N, M)``.
    """
    top = log_p.argmax(-1, keepdim=True)  # (N, 1): each region's top reference
    log_p_ex = log_p.scatter(-1, top, float("-inf"))  # without it
    log_others = torch.logsumexp(log_p_ex, dim=-1, keepdim=True)  # (N, 1): log(1 − p_top)
    is_top = self_index[None] == top  # (N, M)
    log_rest = _log_rest(log_p, self_index, is_top, log_others)  # (N, M)
    rows = torch.arange(len(self_index), device=log_q.device)
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
    ref_temperature: float | None = None,
) -> Tensor:
    """``(N, D)`` regions, ``(K, D)`` references → ``(N, K)`` scores s(r, m) (see the module doc)
    for the divergences without a closed form, ``js`` and ``l1``.

    The signatures Q_m are computed for a chunk of references at a time, so memory stays
    O(N K + chunk K); `max_elements` bounds a chunk's largest buffer. `signatures`, the
    ``(K, K)`` result of `log_relation_signatures` for these references, skips that work.
    `ref_temperature` is T_q of the signatures (None: `temperature`).
    """
    ref_temperature = ref_temperature or temperature
    similarity = cosine_matrix(regions, references)
    log_p = log_ranking_distribution(similarity, temperature)
    references = references.to(similarity.device)
    n, k = log_p.shape
    elementwise = divergence == "js" or exclude_self
    chunk = max(1, max_elements // max(1, (n if elementwise else 1) * k))
    relation = []
    for start in range(0, k, chunk):
        index = torch.arange(start, min(k, start + chunk), device=references.device)
        if signatures is not None:
            log_q = signatures[index].to(log_p.dtype)
        else:
            log_q = log_relation_signatures(references, ref_temperature, exclude_self, rows=index)
        if exclude_self:
            relation.append(excluding_self_divergence(log_p, log_q, index, divergence))
        else:
            relation.append(pairwise_divergence(log_p, log_q, divergence))
    scores = -torch.cat(relation, dim=1) if relation else similarity.new_zeros(n, 0)
    return (1.0 - alpha) * scores + alpha * similarity


@dataclass(frozen=True)
class BankNormalizers:
    """What the closed-form KL needs of a bank, computed once (`bank_normalizers`).

    Attributes:
        unit: ``(K, D)`` the references divided by their norms (zero vectors stay zero), in
            float32 (float64 for float64 features).
        unit_fast: `unit` in the dtype of the products between unit vectors: the features'
            half precision on a GPU, else `unit` itself.
        self_cosine: ``(K,)`` cos(t_m, t_m): 1, or 0 for a zero vector.
        log_norm: ``(K,)`` L_m = log Σ_k exp(cos(t_m, t_k) / T).
        log_norm_others: ``(K,)`` the same sum without k = m (for exclude_self).
        temperature: the T they were computed at.
    """

    unit: Tensor
    unit_fast: Tensor
    self_cosine: Tensor
    log_norm: Tensor
    log_norm_others: Tensor
    temperature: float


def _matmul_dtype(features: Tensor) -> torch.dtype:
    """Half precision stays half on a GPU (tensor cores); on a CPU products run in float32."""
    if features.dtype in (torch.float16, torch.bfloat16) and features.device.type == "cuda":
        return features.dtype
    return torch.promote_types(features.dtype, torch.float32)


def _unit_vectors(features: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, D)`` → the unit vectors in float32 (float64 kept), and each one's cosine with itself."""
    unit = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    return unit, (unit * unit).sum(-1)


def normalizers_file(bank_dir: Path, temperature: float) -> Path:
    """RIM's log-normalizers of a bank at one temperature, kept in the bank's cache folder."""
    return Path(bank_dir) / f"rim_normalizers_T{temperature!r}.safetensors"


def stored_bank_normalizers(bank: ReferenceBank, temperature: float) -> BankNormalizers:
    """`bank_normalizers` for `bank`, kept in the bank's cache folder when it has one and at
    least `STORE_NORMALIZERS_FROM` references (a damaged or mismatched file is recomputed)."""
    path = None
    if bank.directory is not None and len(bank) >= STORE_NORMALIZERS_FROM:
        path = normalizers_file(Path(bank.directory), temperature)
    if path is not None and path.is_file():
        try:
            stored, _ = load_tensors(path, made_for=_normalizers_made_for(bank, temperature))  # checked
            shapes = {name: tuple(t.shape) for name, t in stored.items()}
            if shapes != {"log_norm": (len(bank),), "log_norm_others": (len(bank),)}:
                raise DamagedCacheError(f"cached normalizers '{path}' hold {shapes}, not {len(bank)} of each")
            unit, self_cosine = _unit_vectors(bank.features)
            return BankNormalizers(unit, unit.to(_matmul_dtype(bank.features)), self_cosine,
                                   stored["log_norm"].to(unit), stored["log_norm_others"].to(unit), temperature)
        except DamagedCacheError as e:  # set aside with a warning, like every cache entry, and computed again
            set_aside(path, e)
    normalizers = bank_normalizers(bank.features, temperature, progress=len(bank) >= STORE_NORMALIZERS_FROM)
    if path is not None:
        try:
            save_tensors(path, {"log_norm": normalizers.log_norm, "log_norm_others": normalizers.log_norm_others},
                         made_for=_normalizers_made_for(bank, temperature))
        except OSError:  # a read-only cache: keep them in memory only
            pass
    return normalizers


def _normalizers_made_for(bank: ReferenceBank, temperature: float) -> str:
    """What stored normalizers are for: their bank (its cache folder's key) and temperature."""
    assert bank.directory is not None
    return f"normalizers of bank {Path(bank.directory).name} at T={temperature!r}"


def bank_normalizers(features: Tensor, temperature: float, block_elements: int = 2**24,
                     progress: bool = False) -> BankNormalizers:
    """The log-normalizers L of a bank's relation signatures, without a K × K buffer.

    The cosines are symmetric, so block row i computes only columns ≥ i's start, ``(b, K − s)``,
    and adds each term to its row's sum and to its column's: K² D / 2 multiply-adds, memory
    O(K + `block_elements`). Terms are shifted by 1/T, the largest a logit can be (cos ≤ 1), so
    one exp serves both sums; the rare rows whose sum without m falls into the underflow range
    (every other reference at cos < 1 − 87 T in float32, or a zero vector) are redone exactly.

    Args:
        features: ``(K, D)`` reference features, any float dtype and device.
        temperature: T of the signatures.
        block_elements: the largest block of similarities held at once.
        progress: show a progress bar over the blocks (for large banks).
    Returns:
        `BankNormalizers` with L in float32 (float64 for float64 features).
    """
    unit, self_cosine = _unit_vectors(features)
    dtype, k = unit.dtype, unit.shape[0]
    others = torch.zeros(k, dtype=torch.float64, device=unit.device)  # Σ_{j≠m} exp((cos − 1) / T)
    block = max(1, block_elements // max(1, k))
    for start in tqdm(range(0, k, block), desc=f"RIM normalizers of {k} references (once per bank)",
                      unit="block", disable=not progress, leave=False):
        stop = min(k, start + block)
        terms = (unit[start:stop] @ unit[start:].T).sub_(1.0).div_(temperature).exp_()  # (b, K − start)
        terms[:, : stop - start].diagonal().zero_()
        others[start:stop] += terms.sum(1)  # a block's sums in the features' precision, the totals in float64
        others[stop:] += terms[:, stop - start:].sum(0)  # the mirrored terms
    own = ((self_cosine.double() - 1.0) / temperature).exp()
    log_norm = (others + own).log() + 1.0 / temperature
    log_norm_others = others.log() + 1.0 / temperature
    # Below K · tiny / eps, the terms that underflowed to 0 could matter: redo those rows exactly.
    info = torch.finfo(dtype)
    redo = torch.nonzero(others < k * info.tiny / info.eps).flatten()
    for rows in redo.split(block):
        logits = unit[rows] @ unit.T / temperature  # (r, K)
        log_norm[rows] = torch.logsumexp(logits, dim=-1).double()
        logits[torch.arange(len(rows), device=unit.device), rows] = float("-inf")
        log_norm_others[rows] = torch.logsumexp(logits, dim=-1).double()
    return BankNormalizers(unit, unit.to(_matmul_dtype(features)), self_cosine, log_norm.to(dtype),
                           log_norm_others.to(dtype), temperature)


def kl_reference_scores(regions: Tensor, bank: BankNormalizers, alpha: float, exclude_self: bool = False,
                        temperature: float | None = None) -> Tensor:
    """``(N, D)`` regions → ``(N, K)`` scores s(r, m) with D = KL, by the closed form (module doc), O(N K D).

    Equal to `rim_reference_scores` with ``divergence="kl"`` (the pairwise definition) up
    to rounding. Products of unit vectors (cosines) run in `bank.unit_fast`'s dtype (half on
    a GPU for half features); the distributions, and their products with the bank, in
    float32 (float64 for float64 features): P spans more orders of magnitude than half
    precision holds. The (N, K) work is done in place: at large K it costs more than the products.
    `temperature` is the regions' T (None: the bank's, T_q): log Q_m(j) = cos(t_m, t_j) / T_q − L_m
    whatever P_r's temperature, so the form holds.
    """
    t, unit, fast = bank.temperature, bank.unit, bank.unit_fast  # t = T_q: every Q term below is divided by it
    dtype = unit.dtype

    def times_bank(weights: Tensor) -> Tensor:  # (N, K) → (N, D): Σ_j w_j t̂_j
        return weights @ unit

    def cosines_to_bank(vectors: Tensor) -> Tensor:  # (N, D) unit-ish vectors → (N, K): v · t̂_m
        return (vectors.to(fast.dtype) @ fast.T).to(dtype)

    similarity = cosines_to_bank(F.normalize(regions.to(dtype), dim=-1))
    log_p = log_ranking_distribution(similarity, temperature or t)  # finite, so p log p needs no 0 · log 0 rule
    p = log_p.exp()
    p_log_p = p * log_p
    neg_entropy = p_log_p.sum(-1, keepdim=True)  # (N, 1)
    if not exclude_self:
        # −KL = (1/T) t̂_m · p̄_r − L_m − Σ_j p_j log p_j
        neg_kl = cosines_to_bank(times_bank(p)).div_(t).sub_(bank.log_norm).sub_(neg_entropy)
    else:
        # Without m: p'_j = p_j / (1 − p_m), q'_m ∝ exp(cos(t_m, t_j) / T) for j ≠ m, and
        # −KL(p' ‖ q'_m) = [(1/T) Σ_{j≠m} p_j cos(t_m, t_j) − Σ_{j≠m} p_j log p_j] / (1 − p_m)
        #                  + log(1 − p_m) − L'_m.
        # 1 − p_m is exact for every m but the region's top reference (p_m ≤ 1/2); for the top
        # one, whose 1 − p_m can underflow, P is renormalized without it in log space.
        top = log_p.argmax(-1, keepdim=True)  # (N, 1)
        log_others = torch.logsumexp(log_p.scatter(-1, top, float("-inf")), dim=-1, keepdim=True)  # log(1 − p_top)
        p_ex = (log_p - log_others).exp_().scatter_(-1, top, 0.0)  # (N, K): P without its top, renormalized
        mean_ex = times_bank(p_ex)  # (N, D)
        top_unit = unit[top[:, 0]]  # (N, D)
        # p̄_r = p_top t̂_top + (1 − p_top) p̄_ex: a sum of positive parts, no cancellation.
        mean_ref = log_p.gather(-1, top).exp() * top_unit + log_others.exp() * mean_ex
        rest = 1.0 - p.clamp_max(0.5)  # (N, K): 1 − p_m, m not the top
        neg_kl = cosines_to_bank(mean_ref).addcmul_(p, bank.self_cosine, value=-1.0)  # Σ_{j≠m} p_j cos(t_m, t_j)
        neg_kl.div_(t).add_(p_log_p).sub_(neg_entropy).div_(rest)
        neg_kl.add_(rest.log_()).sub_(bank.log_norm_others)
        neg_entropy_ex = (p_ex * log_p).sum(-1, keepdim=True) - log_others  # Σ_j p'_j log p'_j, m = top
        neg_kl_top = (top_unit * mean_ex).sum(-1, keepdim=True) / t - bank.log_norm_others[top] - neg_entropy_ex
        neg_kl.scatter_(-1, top, neg_kl_top)
    neg_kl.clamp_max_(0.0)  # KL ≥ 0; rounding leaves ~1e-6 · (1/T) either side at the best match
    return neg_kl if alpha == 0 else neg_kl.mul_(1.0 - alpha).add_(similarity, alpha=alpha)


def bank_cosine_spread(features: Tensor, block_elements: int = 2**24) -> float:
    """The standard deviation of a bank's off-diagonal cosines cos(t_m, t_j), m ≠ j.

    Streamed a block of rows at a time (sums of x and x² in float64), so memory is
    O(`block_elements`), never K × K. Needs K ≥ 2.
    """
    unit, _ = _unit_vectors(features)
    k = unit.shape[0]
    if k < 2:
        raise ConfigError(f"matcher.rim.temperature: 'auto' needs at least 2 references in the bank, it has {k}; "
                          "set a number")
    total = total_sq = 0.0
    block = max(1, block_elements // k)
    for start in range(0, k, block):
        cos = unit[start:start + block] @ unit.T  # (b, K)
        cos[:, start:start + block].diagonal().zero_()  # (each row's own cosine adds 0 to both sums)
        total += float(cos.sum(dtype=torch.float64))
        total_sq += float((cos * cos).sum(dtype=torch.float64))
    pairs = k * (k - 1)
    mean = total / pairs
    return max(0.0, total_sq / pairs - mean * mean) ** 0.5


def pooled_class_logits(similarity: Tensor, class_ids: Tensor, num_classes: int, temperature: float,
                        how: str) -> Tensor:
    """``(N, K)`` cosines → ``(N, C)`` pool_{m ∈ c}(cos / T), −inf for a class without references.

    ``logsumexp`` pooling makes ``log_softmax`` of the result the class marginal of the
    reference ranking distribution: log Σ_{m ∈ c} P(m).
    """
    return aggregate_by_class(similarity / temperature, class_ids, num_classes, how)


def class_signatures(references: Tensor, class_ids: Tensor, num_classes: int, temperature: float, how: str,
                     block_elements: int = 2**24) -> Tensor:
    """``(K, D)`` references → ``(C, C)`` log Q̄: row c is the mean over class c's references of
    their class-level distributions softmax_j(pool_{k ∈ j} cos(t_m, t_k) / T).

    Rows of the K × K cosines are streamed in blocks; a class without references has a row of −inf.
    """
    k = references.shape[0]
    block = max(1, block_elements // max(1, k))
    parts = []
    for start in range(0, k, block):
        similarity = cosine_matrix(references[start:start + block], references)  # (b, K)
        logits = pooled_class_logits(similarity, class_ids, num_classes, temperature, how)
        parts.append(torch.log_softmax(logits, dim=-1))  # (b, C)
    log_q = torch.cat(parts)  # (K, C)
    # log mean_{m ∈ c} Q_m(j), a log-sum-exp over class c's rows shifted by their largest entry;
    # entries of −inf (a class j without references, or no member m) stay −inf, never NaN.
    ids = class_ids.to(log_q.device)
    peak = aggregate_by_class(log_q.T, ids, num_classes, "max").T  # (C, C): [c, j] = max_{m ∈ c} log Q_m(j)
    shift = torch.where(torch.isfinite(peak), peak, 0.0)
    summed = log_q.new_zeros(num_classes, num_classes).index_add_(0, ids, (log_q - shift[ids]).exp())
    counts = torch.bincount(ids, minlength=num_classes).to(log_q.dtype)
    return summed.log() + shift - counts.clamp_min(1).log()[:, None]


def class_divergence(log_p: Tensor, log_q: Tensor, kind: str, chunk: int = 64) -> Tensor:
    """``(N, C)`` and ``(M, C)`` log-distributions → ``(N, M)`` D(P_i ‖ Q_m), entries of −inf allowed.

    KL is summed term by term with 0 · log 0 = 0 (classes without references have P = Q = 0,
    where the matrix product of `pairwise_divergence` would give 0 · −inf); JS and L1 as there.
    """
    if kind != "kl":
        return pairwise_divergence(log_p, log_q, kind, chunk)
    parts = [_kl_terms(log_p[:, None], log_q[None, start:start + chunk]) for start in range(0, log_q.shape[0], chunk)]
    return torch.cat(parts, dim=1).clamp_min(0.0) if parts else log_p.new_zeros(log_p.shape[0], 0)


def rim_class_scores(regions: Tensor, references: Tensor, class_ids: Tensor, num_classes: int, temperature: float,
                     divergence: str, alpha: float, how: str, signatures: Tensor | None = None,
                     ref_temperature: float | None = None) -> Tensor:
    """Class-level RIM (``ranking: class``, module doc): ``(N, D)`` regions → ``(N, C)`` class scores.

    Args:
        signatures: ``(C, C)`` `class_signatures` of the bank at `ref_temperature`, if computed.
        ref_temperature: T_q of the references' distributions (None: `temperature`).
    """
    ref_temperature = ref_temperature or temperature
    if signatures is None:
        signatures = class_signatures(references, class_ids, num_classes, ref_temperature, how)
    similarity = cosine_matrix(regions, references)  # (N, K)
    log_p = torch.log_softmax(pooled_class_logits(similarity, class_ids, num_classes, temperature, how), dim=-1)
    present = torch.bincount(class_ids.to(log_p.device), minlength=num_classes) > 0
    relation = -class_divergence(log_p, signatures.to(log_p), divergence)
    pooled = aggregate_by_class(similarity, class_ids, num_classes, how)
    scores = (1.0 - alpha) * relation + alpha * pooled
    return scores.masked_fill(~present, float("-inf"))


@MATCHERS.register("rim")
class RIMMatcher:
    """Relation-aware matching of regions to a reference bank.

    Args:
        temperature: softmax temperature T of the ranking distributions, or ``"auto"``
            (`temperature_scale` × `bank_cosine_spread` of each bank).
        divergence: ``kl``, ``js`` or ``l1``.
        alpha: weight of the direct cosine in the score, in [0, 1].
        aggregation: how a class pools its references' scores (``ranking: class``: their
            similarities): ``max``, ``mean``, ``logsumexp``.
        exclude_self: leave each reference out of its own signature (see the module doc).
        ranking: ``reference`` (distributions over the K references) or ``class`` (over the C classes).
        ref_temperature: T_q of the references' signatures: a number, ``"auto"``, or None (= T).
        temperature_scale: c in T = c × the std of the bank's off-diagonal cosines, for ``"auto"``.
        cache_limit: JS and L1 keep the bank's K × K signatures between calls (on a CPU) for
            banks of at most this many references; KL needs only K numbers per bank.
        verbose: log the temperatures ``auto`` gives for each bank.
    """

    def __init__(self, temperature: Temperature = 0.05, divergence: Divergence = "kl",
                 alpha: Annotated[float, Range(0, 1)] = 0.0, aggregation: Aggregation = "max",
                 exclude_self: bool = False, ranking: Literal["reference", "class"] = "reference",
                 ref_temperature: Temperature | None = None,
                 temperature_scale: Annotated[float, POSITIVE] = 0.1,
                 cache_limit: Annotated[int, GIVEN] = 8192, verbose: Annotated[bool, GIVEN] = True) -> None:
        if ranking == "class" and exclude_self:
            raise ParamError("exclude_self", "applies to ranking=reference only (a class signature is a mean over "
                             "the class's references)")
        self.temperature = temperature
        self.ref_temperature = ref_temperature
        self.temperature_scale = temperature_scale
        self.divergence = divergence
        self.alpha = alpha
        self.aggregation = aggregation
        self.exclude_self = exclude_self
        self.ranking = ranking
        self.cache_limit = cache_limit
        self.verbose = verbose

    def temperatures(self, bank: ReferenceBank) -> tuple[float, float]:
        """(T, T_q) for `bank`, with ``auto`` resolved from its cosine spread (kept with the bank)."""
        resolved = []
        for value in (self.temperature, self.ref_temperature or self.temperature):
            if value == AUTO:
                key = ("rim.cosine_spread",)
                if key not in bank.derived:
                    bank.derived[key] = bank_cosine_spread(bank.features)
                    if self.verbose:
                        log.info(f"matcher.rim: temperature auto = {self.temperature_scale:g} x "
                              f"{bank.derived[key]:.4g} (the std of the bank's off-diagonal cosines)")
                if bank.derived[key] <= 0:
                    raise ConfigError("matcher.rim.temperature: 'auto' needs references of different cosines to each "
                                      "other, the bank's are all the same; set a number")
                value = self.temperature_scale * bank.derived[key]
            resolved.append(float(value))
        return resolved[0], resolved[1]

    def resolved(self, bank: ReferenceBank) -> dict[str, float]:
        """T and T_q as run on `bank` when ``auto`` chose either (`ResolvesSettings`), else {}."""
        if AUTO not in (self.temperature, self.ref_temperature):
            return {}
        t_p, t_q = self.temperatures(bank)
        return {"matcher.rim.temperature": t_p, "matcher.rim.ref_temperature": t_q}

    def prepare(self, bank: ReferenceBank) -> BankNormalizers | Tensor | None:
        """What this matcher needs per bank, computed once and kept with the bank (`bank.derived`),
        so matchers that differ only in α, aggregation or exclude_self share it."""
        _, t_q = self.temperatures(bank)
        if self.ranking == "class":
            key: tuple = ("rim.class_signatures", t_q, self.aggregation)
            if key not in bank.derived:
                bank.derived[key] = class_signatures(bank.features, bank.class_ids, bank.num_classes, t_q,
                                                     self.aggregation)  # (C, C)
            return bank.derived[key]
        if self.divergence == "kl":
            key = ("rim.normalizers", t_q)
            if key not in bank.derived:
                bank.derived[key] = stored_bank_normalizers(bank, t_q)
            return bank.derived[key]
        if len(bank) > self.cache_limit or bank.features.device.type != "cpu":
            return None  # JS / L1 stream the signatures for every image
        key = ("rim.signatures", t_q, self.exclude_self)
        if key not in bank.derived:
            bank.derived[key] = log_relation_signatures(bank.features, t_q, self.exclude_self)  # (K, K)
        return bank.derived[key]

    def __call__(self, region_features: Tensor, bank: ReferenceBank) -> Tensor:
        """``(N, D)`` → ``(N, C)`` class scores."""
        if len(bank) < 2 and self.exclude_self:
            raise ConfigError(f"matcher.rim.exclude_self: needs at least 2 references in the bank, it has {len(bank)}; "
                              "set matcher.rim.exclude_self=false")
        t_p, t_q = self.temperatures(bank)
        state = self.prepare(bank)
        if self.ranking == "class":
            assert state is None or isinstance(state, Tensor)
            return rim_class_scores(region_features, bank.features, bank.class_ids, bank.num_classes, t_p,
                                    self.divergence, self.alpha, self.aggregation, state, t_q)
        if isinstance(state, BankNormalizers):
            scores = kl_reference_scores(region_features, state, self.alpha, self.exclude_self, temperature=t_p)
        else:
            scores = rim_reference_scores(
                region_features, bank.features, t_p, self.divergence, self.alpha, self.exclude_self,
                signatures=state, ref_temperature=t_q,
            )
        return aggregate_by_class(scores, bank.class_ids, bank.num_classes, self.aggregation)
