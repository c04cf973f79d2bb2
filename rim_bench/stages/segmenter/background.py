"""Background rules: which regions become the "background" class (VOC21, Context60, COCO-Object).

On these benchmarks background is the largest class, so how it is decided moves mIoU more
than any matcher setting. The RIM paper's rule could not be read; every rule here is a
config value (``segmenter.paint.background.rule``) recorded with each result:

* ``class`` (the ``rim_*`` default, ours): background is a vocabulary class with references
  of its own (generated from stuff words) and wins where its score is the highest. No
  peer does this alone.
* ``probability`` (SCLIP / NACLIP, prob_thd 0.1): the region's class scores go through a
  softmax at ``temperature``; a region whose best class probability is below ``threshold``
  becomes background. The temperature is in the matcher's score units: SCLIP's 0.01 is for
  cosine scores (their logit scale 100); RIM's −KL scores move 1/T per unit of cosine, so the
  same sharpness there is 0.01 / T (see docs/method.md).
* ``calibrated`` (ours): the best class score standardized against the region's scores for
  all classes, divided by its largest possible value √(C − 1), so it lies in [0, 1] for any
  matcher and vocabulary size (1: one class stands out and the others tie; 0: all equal). It
  does not change under a shift or a positive scaling of the scores, so a threshold does not
  depend on a matcher's units (its best value still depends on the shape of its scores:
  docs/method.md). A region below ``threshold`` becomes background.
* ``score`` (FreeDA's 0.4; formerly ``background_below``): a raw threshold on the best class
  score, in the matcher's units (meaningful for cosine scores; RIM's −KL is unbounded).
* ``area`` (ours): regions smaller than ``min_fraction`` of the image become background
  (tiny SAM fragments are the least reliable regions); the others keep their best class.

With ``references: false`` background's own references do not compete (its column is left
out of the argmax and of the rule's statistics), so only the rule assigns background.
Vocabularies without a class named ``background`` (VOC20, Context59, ...) are left alone:
peers apply no threshold there, and using one collapses mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import torch
from torch import Tensor

from rim_bench.core.errors import ParamError
from rim_bench.core.params import GIVEN, POSITIVE, Block, Range

Rule = Literal["class", "probability", "calibrated", "score", "area"]
RULES: tuple[str, ...] = get_args(Rule)


@dataclass(frozen=True)
class Probability:
    """``softmax(scores / temperature)``; best class probability < threshold → background."""

    temperature: Annotated[float, POSITIVE] = 0.01  # in the matcher's units: SCLIP's logit scale 100
    threshold: Annotated[float, Range(0, 1)] = 0.1  # SCLIP's and NACLIP's prob_thd


@dataclass(frozen=True)
class Calibrated:
    threshold: Annotated[float, Range(0, 1)] = 0.5  # ours, chosen on the smoke and simulation data


@dataclass(frozen=True)
class Score:
    threshold: float = 0.4  # FreeDA's, on cosine scores; in the matcher's units: any number


@dataclass(frozen=True)
class Area:
    min_fraction: Annotated[float, Range(0, 1)] = 0.002


def best_class_probability(scores: Tensor, temperature: float) -> Tensor:
    """``(N, C)`` class scores → ``(N,)`` the largest entry of ``softmax(scores / temperature)``."""
    return torch.softmax(scores / temperature, dim=1).max(1).values


def calibrated_score(scores: Tensor) -> Tensor:
    """``(N, C)`` class scores → ``(N,)`` in [0, 1]: the best score's z-score over the region's
    finite class scores, divided by √(C − 1), its largest possible value.

    Classes scoring −inf (no references) are left out; with fewer than two finite scores,
    or all of them equal, the result is 0 (nothing stands out).
    """
    finite = torch.isfinite(scores)
    count = finite.sum(1)  # (N,)
    values = torch.where(finite, scores, 0.0)
    mean = values.sum(1) / count.clamp_min(1)
    var = torch.where(finite, (values - mean[:, None]) ** 2, 0.0).sum(1) / count.clamp_min(1)
    best = torch.where(finite, scores, float("-inf")).max(1).values
    z = (best - mean) / var.sqrt()
    bound = (count - 1).clamp_min(1).to(scores.dtype).sqrt()
    return torch.where((count >= 2) & (var > 0), z / bound, torch.zeros_like(z))


def region_area_fraction(region_map: Tensor, num_regions: int) -> Tensor:
    """``(H, W)`` region map (−1 = none) → ``(N,)`` each region's share of the image's pixels."""
    covered = region_map[region_map >= 0]
    counts = torch.bincount(covered.flatten(), minlength=num_regions)[:num_regions]
    return counts.to(torch.float32) / max(1, region_map.numel())


class BackgroundRule:
    """Decides the regions that become background, given their class scores.

    Args:
        rule: one of `RULES` (see the module doc).
        references: whether background's own references compete with the other classes.
        probability: ``{temperature, threshold}`` of the ``probability`` rule.
        calibrated: ``{threshold}`` of the ``calibrated`` rule, in [0, 1].
        score: ``{threshold}`` of the ``score`` rule.
        area: ``{min_fraction}`` of the ``area`` rule, in [0, 1].
        background_id: the id of the class named ``background``; None = no such class (no-op).
    """

    def __init__(self, rule: Rule = "class", references: bool = True, *,
                 probability: Annotated[dict[str, float], Block(Probability)],
                 calibrated: Annotated[dict[str, float], Block(Calibrated)],
                 score: Annotated[dict[str, float], Block(Score)], area: Annotated[dict[str, float], Block(Area)],
                 background_id: Annotated[int | None, GIVEN] = None) -> None:
        if rule == "class" and not references:
            raise ParamError("background.references", "is false, so rule 'class' could never give background; "
                             "choose another rule or set references=true")
        self.rule = rule
        self.references = references
        self.params = {"probability": dict(probability), "calibrated": dict(calibrated), "score": dict(score),
                       "area": dict(area)}.get(rule, {})
        self.background_id = background_id

    def describe(self) -> str:
        """A short label of the rule and its values, for tables (``probability (temperature=0.01, threshold=0.1)``)."""
        values = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        refs = "" if self.references else ", no background references"
        return f"{self.rule} ({values}{refs})" if values or refs else self.rule

    def __call__(self, scores: Tensor, region_map: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, C)`` scores, ``(H, W)`` region map → ``(N,)`` labels and ``(N,)`` best scores.

        The best score is the one the labels were taken from (background's column left out
        with ``references: false``), for the segmenter's ``min_score``.
        """
        bg = self.background_id
        if bg is not None and not self.references:
            scores = scores.clone()
            scores[:, bg] = float("-inf")
        best, labels = scores.max(1)
        if bg is None or self.rule == "class":
            return labels, best
        if self.rule == "probability":
            to_background = best_class_probability(scores, self.params["temperature"]) < self.params["threshold"]
        elif self.rule == "calibrated":
            to_background = calibrated_score(scores) < self.params["threshold"]
        elif self.rule == "score":
            to_background = best < self.params["threshold"]
        else:
            area = region_area_fraction(region_map, len(scores)).to(scores.device)
            to_background = area < self.params["min_fraction"]
        return torch.where(to_background, torch.full_like(labels, bg), labels), best


def background_config(rule: str, **params: float) -> dict[str, Any]:
    """The default ``segmenter.paint.background`` block (configs/default.yaml) with `rule` and,
    for that rule, `params` set (``background_config("probability", threshold=0.2)``)."""
    import yaml

    from rim_bench.core.config import DEFAULT_FILE

    block: dict[str, Any] = yaml.safe_load(DEFAULT_FILE.read_text())["segmenter"]["paint"]["background"]
    block["rule"] = rule
    if params:
        block[rule].update(params)
    return block


def describe_background(segmenter_spec: dict[str, Any]) -> str:
    """The background rule of the selected segmenter (`rim_bench.core.config.stage_spec`'s
    ``{"name": ..., **params}``), for tables; ``-`` for a segmenter without one."""
    background = segmenter_spec.get("background")
    return BackgroundRule(**background).describe() if background else "-"
