"""Controlled simulation: RIM against individual cosine and prototype matching on synthetic features.

Real benchmarks mix many effects (proposal quality, feature quality, reference quality).
Here every structural property is a knob, so we can see *where* relation matching helps:

* C classes with random unit centres in D dimensions; a fraction of the classes come in
  "twin" pairs whose centres have a set cosine (inter-class confusion);
* each class has S subcategories, centres ``normalize(c + spread · u)`` with u a random
  unit vector orthogonal to the class centre c, so ``cos(subcategory, class) = 1/√(1+spread²)``
  (intra-class subcategory spread);
* references: R per subcategory (optionally unequal per class: `imbalance`), each the
  subcategory centre plus small Gaussian noise;
* test regions: a uniform random class and subcategory, plus Gaussian noise of norm ≈ σ.

Four sweeps, each over several seeds (a seed fixes the whole world: centres, references,
regions): the region noise σ; then, at one moderate σ, the subcategory spread, the
reference imbalance, and the twin cosine (inter-class confusion, every class in a pair).
The random draws do not depend on the swept value (common random numbers), so
neighbouring points of a curve differ by the swept value only.

Three more tables, at the moderate σ: RIM (reference- and class-level) across the
temperature T in a balanced, an imbalanced and a shifted world; every matcher against a
domain shift (test regions moved by one shared vector, as generated references differ from
photos); and the background rules of rim_bench/stages/segmenter/background.py on worlds with background regions.

Run ``python experiments/simulation/simulate.py [--out DIR] [--quick]``; it writes
``simulation.csv``, ``temperature.csv``, ``domain_shift.csv``, ``background.csv``,
``simulation.md`` (every table) and the plots ``accuracy_vs_noise.png``,
``accuracy_vs_spread.png``, ``accuracy_vs_imbalance.png``, ``accuracy_vs_confusion.png``,
``accuracy_vs_temperature.png``.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from rim_bench.core.types import ReferenceBank
from rim_bench.stages.matching.baselines import CosineMatcher, PrototypeMatcher
from rim_bench.stages.matching.rim import RIMMatcher
from rim_bench.stages.segmenter.background import BackgroundRule, background_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
Matcher = Callable[[Tensor, ReferenceBank], Tensor]

# Swept values. Full run: 80-105 s on 1 thread; quick run: ~7 s.
FULL = dict(
    seeds=list(range(10)),
    sigmas=[0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0],
    spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
    imbalances=[1.0, 2.0, 4.0, 8.0, 16.0],
    twin_cosines=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95],
    n_regions=3000,
)
FULL.update(
    temperatures=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
    shifts=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    calibrated_thresholds=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
)
QUICK = dict(seeds=[0, 1], sigmas=[0.25, 2.5, 5.0], spreads=[0.0, 3.0], imbalances=[1.0, 16.0],
             twin_cosines=[0.0, 0.95], n_regions=400, temperatures=[0.02, 0.2], shifts=[0.0, 1.0],
             calibrated_thresholds=[0.5])
# The temperature sweep's worlds, all at σ = MODERATE_SIGMA: SimConfig fields they change.
CONDITIONS = {"balanced": {}, "imbalance 8": {"imbalance": 8.0}, "shift 0.75": {"shift": 0.75}}
BACKGROUND_FRACTION = 0.4  # background regions among all, as on VOC21 and COCO-Object (the largest class)
SCLIP_PROBABILITY_T = 0.01  # SCLIP's softmax temperature on cosine scores (logit scale 100)
MODERATE_SIGMA = 2.5  # the σ of the other sweeps: every method at ~80-85 % in the default world
SETTINGS = ("noise", "spread", "imbalance", "confusion")
DIFFERENCES = [("rim", "cosine_max"), ("rim", "prototype")]  # paired differences a − b in the tables
AXIS = {"noise": "sigma", "spread": "spread", "imbalance": "imbalance", "confusion": "twin_cosine"}
PLOTS = {"noise": "accuracy_vs_noise.png", "spread": "accuracy_vs_spread.png",
         "imbalance": "accuracy_vs_imbalance.png", "confusion": "accuracy_vs_confusion.png"}


@dataclass(frozen=True)
class SimConfig:
    """Structure of one synthetic world.

    Attributes:
        dim: feature size D.
        n_classes: C.
        n_subcategories: S subcategories per class.
        refs_per_subcategory: R references per subcategory (the geometric mean under imbalance).
        twin_fraction: fraction of the classes that are in a twin pair (``round(f·C/2)`` pairs).
        twin_cosine: cosine between the centres of a twin pair.
        spread: subcategory spread; ``cos(subcategory centre, class centre) = 1/√(1+spread²)``.
        ref_noise: norm of the noise added to a subcategory centre to make a reference.
        imbalance: ratio of the largest to the smallest R per class (1 = balanced); class c gets
            ``round(R · imbalance^(t_c − 1/2))`` (at least 1) with t_c evenly spaced in [0, 1]
            over a random order of the classes.
        sigma: norm of the noise added to a subcategory centre to make a test region.
        n_regions: number of test regions N (object regions; background regions come on top).
        shift: domain shift: every test region (not the references) is moved by one shared
            random vector of this norm, as generated references differ from real photos.
        background_fraction: share of background regions among all regions; > 0 adds a class
            ``background`` (the last id) with references and regions of its own.
        n_stuff: kinds of background ("stuff": sky, wall, road, ...), random unit centres.
        stuff_covered: how many of them the background references are made from (the stuff
            words of a vocabulary cover only part of what real background looks like).
    """

    dim: int = 64
    n_classes: int = 10
    n_subcategories: int = 4
    refs_per_subcategory: int = 2
    twin_fraction: float = 0.4
    twin_cosine: float = 0.8
    spread: float = 0.75
    ref_noise: float = 0.2
    imbalance: float = 1.0
    sigma: float = 0.5
    n_regions: int = 2000
    shift: float = 0.0
    background_fraction: float = 0.0
    n_stuff: int = 8
    stuff_covered: int = 4


@dataclass
class SimData:
    """One draw of the simulation.

    Attributes:
        class_centres: ``(C, D)`` unit vectors.
        subcategory_centres: ``(C, S, D)`` unit vectors.
        bank: the K references (``features (K, D)``, ``class_ids (K,)``, ``subcategory_ids (K,)``
            with subcategory id ``c·S + s``).
        regions: ``(N, D)`` test region features.
        labels: ``(N,)`` int64 true class of each region.
        region_subcategories: ``(N,)`` int64 true subcategory id ``c·S + s``.
    """

    class_centres: Tensor
    subcategory_centres: Tensor
    bank: ReferenceBank
    regions: Tensor
    labels: Tensor
    region_subcategories: Tensor


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, stream): 0 world, 1 references, 2 regions, 3 domain
    shift, 4 background (new knobs draw from new streams: the draws of the others do not change)."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _unit(x: np.ndarray) -> np.ndarray:
    """Normalize the last axis to unit length."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _orthogonal_unit(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """``(..., D)`` unit vectors → random unit vectors of the same shape, each orthogonal to its base."""
    g = rng.standard_normal(base.shape)
    g -= (g * base).sum(-1, keepdims=True) * base
    return _unit(g)


def refs_per_class(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """``(C,)`` int: references per subcategory for each class (see `SimConfig.imbalance`)."""
    c = cfg.n_classes
    t = np.linspace(0.0, 1.0, c) if c > 1 else np.full(1, 0.5)
    counts = np.maximum(1, np.round(cfg.refs_per_subcategory * cfg.imbalance ** (t - 0.5))).astype(int)
    return counts[rng.permutation(c)]


def generate(cfg: SimConfig, seed: int) -> SimData:
    """Draw a world, its reference bank and test regions; deterministic for (cfg, seed)."""
    c, s, d = cfg.n_classes, cfg.n_subcategories, cfg.dim
    world = _rng(seed, 0)
    centres = _unit(world.standard_normal((c, d)))  # (C, D)
    # Twin pairs (0, 1), (2, 3), ...: the second centre at exactly `twin_cosine` from the first.
    n_pairs = min(c // 2, int(round(cfg.twin_fraction * c / 2)))
    for i in range(n_pairs):
        a = centres[2 * i]
        u = _orthogonal_unit(world, a)
        centres[2 * i + 1] = cfg.twin_cosine * a + np.sqrt(1.0 - cfg.twin_cosine**2) * u
    directions = _orthogonal_unit(world, np.broadcast_to(centres[:, None], (c, s, d)).copy())  # (C, S, D)
    subcats = _unit(centres[:, None] + cfg.spread * directions)  # (C, S, D)

    ref_rng = _rng(seed, 1)
    counts = refs_per_class(cfg, ref_rng)
    feats, class_ids, sub_ids = [], [], []
    for ci in range(c):
        for si in range(s):
            noise = ref_rng.standard_normal((counts[ci], d)) * cfg.ref_noise / np.sqrt(d)
            feats.append(subcats[ci, si] + noise)
            class_ids += [ci] * counts[ci]
            sub_ids += [ci * s + si] * counts[ci]
    bank = ReferenceBank(
        features=torch.from_numpy(np.concatenate(feats)).float(),
        class_ids=torch.tensor(class_ids, dtype=torch.int64),
        subcategory_ids=torch.tensor(sub_ids, dtype=torch.int64),
        class_names=[f"class{ci}" for ci in range(c)],
        subcategory_names=[f"class{ci}/sub{si}" for ci in range(c) for si in range(s)],
    )

    reg_rng = _rng(seed, 2)
    labels = reg_rng.integers(0, c, cfg.n_regions)
    which = reg_rng.integers(0, s, cfg.n_regions)
    # Standard draws scaled by σ afterwards: the same regions, only noisier, along a σ sweep.
    noise = reg_rng.standard_normal((cfg.n_regions, d)) / np.sqrt(d)
    regions = subcats[labels, which] + cfg.sigma * noise
    region_subcategories = labels * s + which
    if cfg.background_fraction > 0:
        bank, regions, labels, region_subcategories = _add_background(cfg, seed, bank, regions, labels,
                                                                      region_subcategories)
    # One shared offset for every test region, along a direction drawn once per seed.
    regions = regions + cfg.shift * _unit(_rng(seed, 3).standard_normal(d))
    return SimData(
        class_centres=torch.from_numpy(centres).float(),
        subcategory_centres=torch.from_numpy(subcats).float(),
        bank=bank,
        regions=torch.from_numpy(regions).float(),
        labels=torch.from_numpy(labels).long(),
        region_subcategories=torch.from_numpy(region_subcategories).long(),
    )


def _add_background(cfg: SimConfig, seed: int, bank: ReferenceBank, regions: np.ndarray, labels: np.ndarray,
                    region_subcategories: np.ndarray) -> tuple[ReferenceBank, np.ndarray, np.ndarray, np.ndarray]:
    """A ``background`` class (id C): references from the first `stuff_covered` stuff centres
    (R per centre, as a subcategory), and ``N · f / (1 − f)`` regions from all `n_stuff` centres."""
    c, d, r = cfg.n_classes, cfg.dim, cfg.refs_per_subcategory
    rng = _rng(seed, 4)
    stuff = _unit(rng.standard_normal((cfg.n_stuff, d)))  # (B, D)
    covered = stuff[: cfg.stuff_covered]
    refs = np.repeat(covered, r, axis=0) + rng.standard_normal((len(covered) * r, d)) * cfg.ref_noise / np.sqrt(d)
    n_bg = int(round(cfg.n_regions * cfg.background_fraction / (1.0 - cfg.background_fraction)))
    kind = rng.integers(0, cfg.n_stuff, n_bg)
    bg_regions = stuff[kind] + cfg.sigma * rng.standard_normal((n_bg, d)) / np.sqrt(d)
    first_sub = len(bank.subcategory_names)
    bank = ReferenceBank(
        features=torch.cat([bank.features, torch.from_numpy(refs).float()]),
        class_ids=torch.cat([bank.class_ids, torch.full((len(refs),), c, dtype=torch.int64)]),
        subcategory_ids=torch.cat([bank.subcategory_ids,
                                   torch.from_numpy(first_sub + np.repeat(np.arange(len(covered)), r)).long()]),
        class_names=[*bank.class_names, "background"],
        subcategory_names=[*bank.subcategory_names, *(f"background/stuff{i}" for i in range(len(covered)))],
    )
    return (bank, np.concatenate([regions, bg_regions]), np.concatenate([labels, np.full(n_bg, c)]),
            np.concatenate([region_subcategories, first_sub + kind]))


def default_temperature(config: Path = REPO / "configs" / "default.yaml") -> float:
    """`matcher.rim.temperature` from the default config."""
    return float(yaml.safe_load(config.read_text())["matcher"]["rim"]["temperature"])


def default_temperature_scale(config: Path = REPO / "configs" / "default.yaml") -> float:
    """`matcher.rim.temperature_scale` (c of ``temperature: auto``) from the default config."""
    return float(yaml.safe_load(config.read_text())["matcher"]["rim"]["temperature_scale"])


def rim_variant(ranking: str, temperature: float) -> RIMMatcher:
    """RIM at `temperature` with reference- or class-level ranking distributions (KL, max)."""
    return RIMMatcher(temperature=temperature, divergence="kl", alpha=0.0, aggregation="max", ranking=ranking)


def build_matchers(temperature: float) -> dict[str, Matcher]:
    """The compared methods, by name: RIM and its variants (class-level ranking, T auto), the baselines."""
    matchers: dict[str, Matcher] = {
        "rim": RIMMatcher(temperature=temperature, divergence="kl", alpha=0.0, aggregation="max"),
        "rim_alpha0.5": RIMMatcher(temperature=temperature, divergence="kl", alpha=0.5, aggregation="max"),
        "rim_exclude_self": RIMMatcher(temperature=temperature, divergence="kl", alpha=0.0, aggregation="max",
                                       exclude_self=True),
        "rim_class": rim_variant("class", temperature),
        "rim_auto": RIMMatcher(temperature="auto", divergence="kl", alpha=0.0, aggregation="max",
                               temperature_scale=default_temperature_scale(), verbose=False),
    }
    matchers["cosine_max"] = CosineMatcher(aggregation="max")
    matchers["prototype"] = PrototypeMatcher()
    return matchers


@torch.no_grad()
def accuracy(matcher: Matcher, data: SimData) -> float:
    """Fraction of regions whose highest-scoring class ``(N, C) → (N,)`` is the true one."""
    scores = matcher(data.regions, data.bank)
    return float((scores.argmax(dim=1) == data.labels).float().mean())


def run_sweeps(sweep: dict, base: SimConfig, matchers: dict[str, Matcher]) -> list[dict]:
    """All four sweeps; one row per (setting, value, method, seed)."""
    base = replace(base, n_regions=sweep["n_regions"])
    plans = {
        "noise": [replace(base, sigma=v) for v in sweep["sigmas"]],
        "spread": [replace(base, sigma=MODERATE_SIGMA, spread=v) for v in sweep["spreads"]],
        "imbalance": [replace(base, sigma=MODERATE_SIGMA, imbalance=v) for v in sweep["imbalances"]],
        "confusion": [replace(base, sigma=MODERATE_SIGMA, twin_fraction=1.0, twin_cosine=v)
                      for v in sweep["twin_cosines"]],
    }
    rows = []
    for setting, configs in plans.items():
        for cfg in configs:
            for seed in sweep["seeds"]:
                data = generate(cfg, seed)
                for name, matcher in matchers.items():
                    rows.append(dict(setting=setting, sigma=cfg.sigma, spread=cfg.spread, imbalance=cfg.imbalance,
                                     twin_fraction=cfg.twin_fraction, twin_cosine=cfg.twin_cosine,
                                     method=name, seed=seed, accuracy=accuracy(matcher, data)))
    return rows


def summarize(rows: list[dict]) -> dict[tuple[str, float, str], tuple[float, float]]:
    """(setting, swept value, method) → (mean, std over seeds) of the accuracy.

    Also (setting, value, "a-b") → mean and std of the per-seed paired difference a − b for
    the pairs in `DIFFERENCES` (the same world and regions, so the noise of the draw cancels).
    """
    groups: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    by_seed: dict[tuple[str, float, str, int], float] = {}
    for r in rows:
        key = (r["setting"], float(r[AXIS[r["setting"]]]), r["method"])
        groups[key].append(r["accuracy"])
        by_seed[key + (r["seed"],)] = r["accuracy"]
    for (setting, value, method, seed), acc in list(by_seed.items()):
        for a, b in DIFFERENCES:
            if method == a and (setting, value, b, seed) in by_seed:
                groups[(setting, value, f"{a}-{b}")].append(acc - by_seed[(setting, value, b, seed)])
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in groups.items()}



def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows))


@torch.no_grad()
def class_size_bias(matchers: dict[str, Matcher], cfg: SimConfig, seeds: list[int]) -> dict[str, tuple[float, float]]:
    """How often each method predicts the best- and the worst-referenced classes.

    Returns method → (predicted / true count of regions, over the classes with the most
    references; the same over the classes with the fewest), pooled over `seeds`. 1 = no bias.
    """
    totals = {m: np.zeros(4) for m in matchers}  # pred big, true big, pred small, true small
    for seed in seeds:
        data = generate(cfg, seed)
        per_class = torch.bincount(data.bank.class_ids, minlength=cfg.n_classes)
        big, small = per_class == per_class.max(), per_class == per_class.min()
        for name, matcher in matchers.items():
            pred = matcher(data.regions, data.bank).argmax(dim=1)
            totals[name] += [big[pred].sum(), big[data.labels].sum(), small[pred].sum(), small[data.labels].sum()]
    return {m: (t[0] / t[1], t[2] / t[3]) for m, t in totals.items()}


@torch.no_grad()
def temperature_sweep(sweep: dict, base: SimConfig) -> list[dict]:
    """RIM (reference- and class-level) at every T in each of `CONDITIONS`, and the T-free
    baselines once per world; one row per (condition, method, T, seed)."""
    rows = []
    for condition, fields in CONDITIONS.items():
        cfg = replace(base, n_regions=sweep["n_regions"], sigma=MODERATE_SIGMA, **fields)
        for seed in sweep["seeds"]:
            data = generate(cfg, seed)
            for name, matcher in (("cosine_max", CosineMatcher("max")), ("prototype", PrototypeMatcher())):
                rows.append(dict(condition=condition, method=name, temperature=None, seed=seed,
                                 accuracy=accuracy(matcher, data)))
            for t in sweep["temperatures"]:
                for ranking, name in (("reference", "rim"), ("class", "rim_class")):
                    rows.append(dict(condition=condition, method=name, temperature=t, seed=seed,
                                     accuracy=accuracy(rim_variant(ranking, t), data)))
    return rows


def temperature_table(rows: list[dict]) -> dict[tuple[str, str, float], tuple[float, float]]:
    """(condition, "rim" | "rim_class", T) → mean and std over seeds of the paired difference to
    cosine_max, in points; (condition, method, T) for the accuracies themselves under key "acc"."""
    cosine = {(r["condition"], r["seed"]): r["accuracy"] for r in rows if r["method"] == "cosine_max"}
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["temperature"] is not None:
            groups[("delta", r["condition"], r["method"], r["temperature"])].append(
                100 * (r["accuracy"] - cosine[(r["condition"], r["seed"])]))
        groups[("acc", r["condition"], r["method"], r["temperature"])].append(100 * r["accuracy"])
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in groups.items()}


def verdicts(stats: dict, condition: str, method: str, temperatures: list[float], n_seeds: int) -> str:
    """Where `method` is ahead of, tied with or behind cosine_max: the paired difference beyond
    ± 2 standard errors (std / √seeds) of zero, or within them."""
    groups: dict[str, list[str]] = {"ahead": [], "tied": [], "behind": []}
    for t in temperatures:
        mean, std = stats[("delta", condition, method, t)]
        margin = 2 * std / np.sqrt(n_seeds)
        groups["ahead" if mean > margin else "behind" if mean < -margin else "tied"].append(f"{t:g}")
    return "; ".join(f"{k} at T = {', '.join(v)}" for k, v in groups.items() if v)


@torch.no_grad()
def shift_sweep(sweep: dict, base: SimConfig, matchers: dict[str, Matcher]) -> list[dict]:
    """Every matcher as the test regions move away from the references (σ = MODERATE_SIGMA)."""
    rows = []
    for shift in sweep["shifts"]:
        cfg = replace(base, n_regions=sweep["n_regions"], sigma=MODERATE_SIGMA, shift=shift)
        for seed in sweep["seeds"]:
            data = generate(cfg, seed)
            for name, matcher in matchers.items():
                rows.append(dict(shift=shift, method=name, seed=seed, accuracy=accuracy(matcher, data)))
    return rows


def background_rules(temperature: float, thresholds: list[float]) -> dict[str, tuple[dict, dict]]:
    """The background rules of rim_bench/stages/segmenter/background.py to simulate, by label: (rule config for
    cosine scores, rule config for RIM's −KL scores). The probability rule's temperature is in
    score units: SCLIP's 0.01 on cosines, 0.01 / T on RIM's scores; the score rule's 0.4 has no
    counterpart on RIM's scale. The area rule needs region sizes, which the simulation has not."""
    rules: dict[str, tuple[dict, dict]] = {"class": (background_config("class"),) * 2}
    for refs in (True, False):
        suffix = "" if refs else ", no bg refs"
        cos_p = background_config("probability", temperature=SCLIP_PROBABILITY_T, threshold=0.1)
        rim_p = background_config("probability", temperature=SCLIP_PROBABILITY_T / temperature, threshold=0.1)
        rules[f"probability 0.1{suffix}"] = (cos_p, rim_p)
        for thd in thresholds:
            rules[f"calibrated {thd:g}{suffix}"] = (background_config("calibrated", threshold=thd),) * 2
        for pair in [rules[k] for k in rules if k.endswith(suffix) and k != "class"]:
            for config in pair:
                config["references"] = refs
    rules["score 0.4"] = (background_config("score", threshold=0.4), None)
    return rules


def region_miou(pred: Tensor, labels: Tensor, num_classes: int) -> tuple[float, float]:
    """Region-level mIoU over the classes and the background (last class) IoU, in %."""
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    iou = inter / union.clamp_min(1)
    return 100 * float(iou.mean()), 100 * float(iou[-1])


@torch.no_grad()
def background_sweep(sweep: dict, base: SimConfig, temperature: float) -> list[dict]:
    """Each background rule on worlds with background regions (some stuff the references miss),
    without and with a domain shift; one row per (shift, method, rule, seed)."""
    methods = {"rim": (rim_variant("reference", temperature), 1), "rim_class": (rim_variant("class", temperature), 1),
               "cosine_max": (CosineMatcher("max"), 0)}
    rules = background_rules(temperature, sweep["calibrated_thresholds"])
    rows = []
    for shift in (0.0, CONDITIONS["shift 0.75"]["shift"]):
        cfg = replace(base, n_regions=sweep["n_regions"], sigma=MODERATE_SIGMA, shift=shift,
                      background_fraction=BACKGROUND_FRACTION)
        for seed in sweep["seeds"]:
            data = generate(cfg, seed)
            bg = data.bank.num_classes - 1
            for name, (matcher, scale) in methods.items():
                scores = matcher(data.regions, data.bank)
                for label, configs in rules.items():
                    if configs[scale] is None:
                        continue
                    pred, _ = BackgroundRule(**configs[scale], background_id=bg)(scores, torch.empty(0))
                    miou, bg_iou = region_miou(pred, data.labels, data.bank.num_classes)
                    rows.append(dict(shift=shift, method=name, rule=label, seed=seed, mIoU=miou, background_IoU=bg_iou))
    return rows


def write_rows(rows: list[dict], path: Path) -> None:
    """Any list of flat rows as CSV (floats to 4 decimals)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def extra_markdown(temp_rows: list[dict], shift_rows: list[dict], bg_rows: list[dict], temperature: float) -> list[str]:
    """The temperature, domain-shift and background tables (Markdown lines)."""
    stats = temperature_table(temp_rows)
    temps = sorted({r["temperature"] for r in temp_rows if r["temperature"] is not None})
    lines = ["", "## Temperature (σ = 2.5)", "",
             "Accuracy of RIM at each T (reference-level `rim`, class-level `rim_class`) and its paired "
             "difference to `cosine_max` (points, mean ± std over seeds), in each world.", ""]
    header = ["T"] + [f"{m} ({c})" for c in CONDITIONS for m in ("rim", "rim_class")]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for t in temps:
        cells = []
        for c in CONDITIONS:
            for m in ("rim", "rim_class"):
                acc, _ = stats[("acc", c, m, t)]
                delta, std = stats[("delta", c, m, t)]
                cells.append(f"{acc:.1f} ({delta:+.2f} ± {std:.2f})")
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    lines.append("| cosine_max | " + " | ".join(
        f"{stats[('acc', c, 'cosine_max', None)][0]:.1f}" for c in CONDITIONS for _ in range(2)) + " |")
    n_seeds = len({r["seed"] for r in temp_rows})
    lines += ["", "Against cosine_max (paired difference beyond ± 2 standard errors of zero = ahead or behind):", ""]
    lines += [f"- {m}, {c}: {verdicts(stats, c, m, temps, n_seeds)}" for m in ("rim", "rim_class") for c in CONDITIONS]

    methods = list(dict.fromkeys(r["method"] for r in shift_rows))
    shifts = sorted({r["shift"] for r in shift_rows})
    by = defaultdict(list)
    for r in shift_rows:
        by[(r["shift"], r["method"])].append(100 * r["accuracy"])
    paired = defaultdict(list)
    acc = {(r["shift"], r["method"], r["seed"]): r["accuracy"] for r in shift_rows}
    for (shift, method, seed), a in acc.items():
        if method == "rim":
            paired[shift].append(100 * (a - acc[(shift, "cosine_max", seed)]))
    lines += ["", f"## Domain shift (σ = 2.5, RIM at T = {temperature:g})", "",
              "Every test region moved by one shared vector of the given norm (the references stay): accuracy, "
              "mean ± std over seeds.", "",
              "| shift | " + " | ".join(methods) + " | Δ rim − cosine_max |", "|---" * (len(methods) + 2) + "|"]
    for s in shifts:
        lines.append(f"| {s:g} | " + " | ".join(_mean_std(by[(s, m)]) for m in methods)
                     + f" | {np.mean(paired[s]):+.2f} ± {np.std(paired[s]):.2f} |")

    rules = list(dict.fromkeys(r["rule"] for r in bg_rows))
    bg_methods = list(dict.fromkeys(r["method"] for r in bg_rows))
    cells = defaultdict(list)
    for r in bg_rows:
        cells[(r["shift"], r["rule"], r["method"])].append((r["mIoU"], r["background_IoU"]))
    lines += ["", f"## Background rules ({int(100 * BACKGROUND_FRACTION)} % background regions, σ = 2.5)", "",
              "Region mIoU over the 10 classes and background, and the background IoU (in brackets), mean over "
              f"seeds. Background references cover {SimConfig.stuff_covered} of the {SimConfig.n_stuff} kinds of "
              f"stuff. The probability rule is SCLIP's (threshold 0.1, T = {SCLIP_PROBABILITY_T:g} on cosine "
              f"scores, {SCLIP_PROBABILITY_T / temperature:g} on RIM's); `no bg refs`: background's references "
              "do not compete, only the rule gives background. `score 0.4` (FreeDA's) is for cosine scores only.", ""]
    for shift in sorted({r["shift"] for r in bg_rows}):
        lines += [f"Domain shift {shift:g}:", "", "| rule | " + " | ".join(bg_methods) + " |",
                  "|---" * (len(bg_methods) + 1) + "|"]
        for rule in rules:
            row = []
            for m in bg_methods:
                values = cells.get((shift, rule, m))
                row.append("-" if not values else
                           f"{np.mean([v[0] for v in values]):.1f} ({np.mean([v[1] for v in values]):.1f})")
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
        lines.append("")
    return lines


def plot_temperature(temp_rows: list[dict], path: Path) -> None:
    """Paired difference to cosine_max against T, one line per (method, world)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = temperature_table(temp_rows)
    temps = sorted({r["temperature"] for r in temp_rows if r["temperature"] is not None})
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=90)
    for c in CONDITIONS:
        for m, style in (("rim", "-"), ("rim_class", "--")):
            ax.errorbar(temps, [stats[("delta", c, m, t)][0] for t in temps],
                        yerr=[stats[("delta", c, m, t)][1] for t in temps], linestyle=style, marker="o",
                        markersize=4, capsize=3, label=f"{m}, {c}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("accuracy − cosine_max (points)")
    ax.set_title(f"RIM vs nearest reference across T (σ = {MODERATE_SIGMA})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(rows: list[dict], path: Path) -> None:
    """One line per (setting, value, method, seed)."""
    fields = ["setting", "sigma", "spread", "imbalance", "twin_fraction", "twin_cosine", "method", "seed", "accuracy"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "accuracy": f"{r['accuracy']:.4f}"})


def write_markdown(rows: list[dict], stats: dict, base: SimConfig, sweep: dict, temperature: float,
                   path: Path, bias: dict[str, tuple[float, float]] | None = None, extra: list[str] = ()) -> None:
    """Mean ± std accuracy (percent) per setting, the best of each row in bold, and the paired
    differences of RIM to the baselines (percentage points)."""
    methods = _methods(rows)
    fixed = {k: v for k, v in asdict(base).items() if k not in ("n_regions", "sigma")}
    lines = [
        "# Controlled simulation: region classification accuracy (%)",
        "",
        f"Mean ± std over seeds {sweep['seeds']}, {sweep['n_regions']} test regions each; "
        f"RIM temperature {temperature} (configs/default.yaml), divergence KL, aggregation max.",
        f"World (unless swept): {', '.join(f'{k}={v}' for k, v in fixed.items())}; "
        f"spread, imbalance and confusion sweeps at sigma={MODERATE_SIGMA}; the confusion sweep pairs "
        "every class with a twin (twin_fraction=1.0).",
        "Δ columns: per-seed paired difference, mean ± std, in points.",
    ]
    titles = {"noise": "Region noise σ", "spread": "Subcategory spread", "imbalance": "Reference imbalance",
              "confusion": "Inter-class confusion (twin cosine)"}
    diffs = [f"{a}-{b}" for a, b in DIFFERENCES if a in methods and b in methods]
    for setting in SETTINGS:
        values = sorted({k[1] for k in stats if k[0] == setting})
        if not values:
            continue
        header = methods + [f"Δ {d.replace('-', ' − ')}" for d in diffs]
        lines += ["", f"## {titles[setting]}", "", f"| {AXIS[setting]} | " + " | ".join(header) + " |",
                  "|---" * (len(header) + 1) + "|"]
        for v in values:
            means = [round(100 * stats[(setting, v, m)][0], 1) for m in methods]
            cells = []
            for m, mean in zip(methods, means):
                cell = f"{mean:.1f} ± {100 * stats[(setting, v, m)][1]:.1f}"
                cells.append(f"**{cell}**" if mean == max(means) else cell)
            for d in diffs:
                mean, std = stats[(setting, v, d)]
                cells.append(f"{100 * mean:+.1f} ± {100 * std:.1f}")
            lines.append(f"| {v:g} | " + " | ".join(cells) + " |")
    if bias:
        lines += ["", f"## Class-size bias at imbalance {max(sweep['imbalances']):g} (sigma={MODERATE_SIGMA})", "",
                  "Regions predicted as / truly of the classes with the most references, and the same for the "
                  "classes with the fewest (1.00 = unbiased), pooled over the seeds.", "",
                  "| method | most-referenced classes | fewest-referenced classes |", "|---|---|---|"]
        lines += [f"| {m} | {big:.2f} | {small:.2f} |" for m, (big, small) in bias.items()]
    path.write_text("\n".join([*lines, *extra]) + "\n")


def plot(rows: list[dict], stats: dict, setting: str, path: Path) -> None:
    """Accuracy against the swept value of `setting`: one line per method, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"noise": "region noise σ (norm of the added Gaussian noise)",
              "spread": "subcategory spread (cos to class centre = 1/√(1+spread²))",
              "imbalance": "reference imbalance (largest / smallest references per class)",
              "confusion": "cosine between the centres of twin classes"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=90)
    values = sorted({k[1] for k in stats if k[0] == setting})
    # Distinct line styles: RIM variants often coincide and must stay visible on top of each other.
    styles = {"rim": ("-", "o"), "rim_alpha0.5": ("--", "x"), "rim_exclude_self": (":", "^"),
              "cosine_max": ("-", "s"), "prototype": ("-", "D")}
    for m in _methods(rows):
        mean = [100 * stats[(setting, v, m)][0] for v in values]
        std = [100 * stats[(setting, v, m)][1] for v in values]
        line, marker = styles.get(m, ("-", "o"))
        ax.errorbar(values, mean, yerr=std, linestyle=line, marker=marker, markersize=4, capsize=3, label=m)
    if setting == "imbalance":
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xlabel(labels[setting])
    ax.set_ylabel("region accuracy (%)")
    title = {"noise": "Accuracy vs region noise",
             "spread": f"Accuracy vs subcategory spread (σ = {MODERATE_SIGMA})",
             "imbalance": f"Accuracy vs reference imbalance (σ = {MODERATE_SIGMA})",
             "confusion": f"Accuracy vs inter-class confusion (σ = {MODERATE_SIGMA})"}[setting]
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_summary(stats: dict, methods: list[str]) -> None:
    """For each setting: the mean accuracy per method over the sweep, and who wins where."""
    for setting in SETTINGS:
        values = sorted({k[1] for k in stats if k[0] == setting})
        if not values:
            continue
        overall = {m: np.mean([stats[(setting, v, m)][0] for v in values]) for m in methods}
        print(f"[{setting}] mean accuracy over {AXIS[setting]} in {values}: "
              + ", ".join(f"{m} {100 * a:.1f}" for m, a in overall.items()))
        winners = [f"{v:g}:{max(methods, key=lambda m: stats[(setting, v, m)][0])}" for v in values]
        print(f"[{setting}] best per {AXIS[setting]}: " + " ".join(winners))
        for a, b in DIFFERENCES:
            if (setting, values[0], f"{a}-{b}") in stats:
                deltas = " ".join(f"{v:g}:{100 * stats[(setting, v, f'{a}-{b}')][0]:+.1f}" for v in values)
                print(f"[{setting}] {a} − {b} (points): {deltas}")


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the sweeps, write csv, md and plots to ``--out``, print a summary; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--quick", action="store_true", help="a reduced sweep (tests)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    sweep = QUICK if args.quick else FULL
    temperature = default_temperature()
    matchers = build_matchers(temperature)
    base = SimConfig()
    rows = run_sweeps(sweep, base, matchers)
    stats = summarize(rows)
    worst = replace(base, n_regions=sweep["n_regions"], sigma=MODERATE_SIGMA, imbalance=max(sweep["imbalances"]))
    bias = class_size_bias(matchers, worst, sweep["seeds"])

    temp_rows = temperature_sweep(sweep, base)
    shift_rows = shift_sweep(sweep, base, matchers)
    bg_rows = background_sweep(sweep, base, temperature)

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "simulation.csv")
    write_rows(temp_rows, args.out / "temperature.csv")
    write_rows(shift_rows, args.out / "domain_shift.csv")
    write_rows(bg_rows, args.out / "background.csv")
    write_markdown(rows, stats, base, sweep, temperature, args.out / "simulation.md", bias,
                   extra_markdown(temp_rows, shift_rows, bg_rows, temperature))
    for setting, name in PLOTS.items():
        plot(rows, stats, setting, args.out / name)
    plot_temperature(temp_rows, args.out / "accuracy_vs_temperature.png")
    print_summary(stats, list(matchers))
    print(f"[bias] predicted/true, most- and fewest-referenced classes at imbalance {worst.imbalance:g}: "
          + ", ".join(f"{m} {b:.2f}/{s:.2f}" for m, (b, s) in bias.items()))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.1f} s → {args.out}")
    return rows


if __name__ == "__main__":
    main()
