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

Run ``python experiments/simulation/simulate.py [--out DIR] [--quick]``; it writes
``simulation.csv``, ``simulation.md`` and the plots ``accuracy_vs_noise.png``,
``accuracy_vs_spread.png``, ``accuracy_vs_imbalance.png``, ``accuracy_vs_confusion.png``.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch import Tensor

from rim_bench.matching.baselines import CosineMatcher, PrototypeMatcher
from rim_bench.matching.rim import RIMMatcher
from rim_bench.types import ReferenceBank

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
Matcher = Callable[[Tensor, ReferenceBank], Tensor]

# Swept values. Full run: ~13 s on 2 CPU cores; quick run: ~2 s.
FULL = dict(
    seeds=list(range(10)),
    sigmas=[0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0],
    spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
    imbalances=[1.0, 2.0, 4.0, 8.0, 16.0],
    twin_cosines=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95],
    n_regions=3000,
)
QUICK = dict(seeds=[0, 1], sigmas=[0.25, 2.5, 5.0], spreads=[0.0, 3.0], imbalances=[1.0, 16.0],
             twin_cosines=[0.0, 0.95], n_regions=400)
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
        n_regions: number of test regions N.
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
    """Independent generator per (seed, stream): 0 world, 1 references, 2 regions."""
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
    return SimData(
        class_centres=torch.from_numpy(centres).float(),
        subcategory_centres=torch.from_numpy(subcats).float(),
        bank=bank,
        regions=torch.from_numpy(regions).float(),
        labels=torch.from_numpy(labels).long(),
        region_subcategories=torch.from_numpy(labels * s + which).long(),
    )


def default_temperature(config: Path = REPO / "configs" / "default.yaml") -> float:
    """`matcher.rim.temperature` from the default config."""
    return float(yaml.safe_load(config.read_text())["matcher"]["rim"]["temperature"])


def build_matchers(temperature: float) -> dict[str, Matcher]:
    """The compared methods, by name (RIM with `exclude_self` too, where the matcher has it)."""
    matchers: dict[str, Matcher] = {
        "rim": RIMMatcher(temperature=temperature, divergence="kl", alpha=0.0, aggregation="max"),
        "rim_alpha0.5": RIMMatcher(temperature=temperature, divergence="kl", alpha=0.5, aggregation="max"),
    }
    if "exclude_self" in inspect.signature(RIMMatcher).parameters:
        matchers["rim_exclude_self"] = RIMMatcher(
            temperature=temperature, divergence="kl", alpha=0.0, aggregation="max", exclude_self=True
        )
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


def write_csv(rows: list[dict], path: Path) -> None:
    """One line per (setting, value, method, seed)."""
    fields = ["setting", "sigma", "spread", "imbalance", "twin_fraction", "twin_cosine", "method", "seed", "accuracy"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "accuracy": f"{r['accuracy']:.4f}"})


def write_markdown(rows: list[dict], stats: dict, base: SimConfig, sweep: dict, temperature: float,
                   path: Path, bias: dict[str, tuple[float, float]] | None = None) -> None:
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
    path.write_text("\n".join(lines) + "\n")


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

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "simulation.csv")
    write_markdown(rows, stats, base, sweep, temperature, args.out / "simulation.md", bias)
    for setting, name in PLOTS.items():
        plot(rows, stats, setting, args.out / name)
    print_summary(stats, list(matchers))
    print(f"[bias] predicted/true, most- and fewest-referenced classes at imbalance {worst.imbalance:g}: "
          + ", ".join(f"{m} {b:.2f}/{s:.2f}" for m, (b, s) in bias.items()))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.1f} s → {args.out}")
    return rows


if __name__ == "__main__":
    main()
