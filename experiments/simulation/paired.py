"""Paired differences between matchers in the committed simulation results, with their standard errors.

    python experiments/simulation/paired.py

Reads results/*.csv (no simulation is run) and prints, for each swept value, the mean over
seeds of each method and of method − reference, ± the standard error of the paired
differences (sample std over seeds / √seeds), marked "ahead" / "behind" beyond 2 standard errors.
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _read(name: str) -> list[dict[str, str]]:
    with open(RESULTS / name, newline="") as f:
        return list(csv.DictReader(f))


def paired(values: dict[str, dict[str, float]], method: str, reference: str) -> tuple[float, float]:
    """Mean and standard error of method − reference over the seeds both have, in points."""
    seeds = sorted(set(values[method]) & set(values[reference]))
    diffs = [100 * (values[method][s] - values[reference][s]) for s in seeds]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return mean, sd / math.sqrt(len(diffs))


def verdict(mean: float, se: float) -> str:
    return "ahead" if mean > 2 * se else "behind" if mean < -2 * se else "tied"


def table(title: str, groups: dict[str, dict[str, dict[str, float]]], pairs: list[tuple[str, str]]) -> None:
    print(f"\n## {title}")
    for key, values in groups.items():
        means = {m: 100 * sum(v.values()) / len(v) for m, v in values.items()}
        cells = [f"{m} {means[m]:.2f}" for m in sorted(means)]
        print(f"{key}: " + ", ".join(cells))
        for method, reference in pairs:
            if method in values and reference in values:
                mean, se = paired(values, method, reference)
                print(f"    {method} − {reference}: {mean:+.2f} ± {se:.2f} ({verdict(mean, se)})")


def main() -> None:
    sim = _read("simulation.csv")
    swept = {"noise": "sigma", "spread": "spread", "imbalance": "imbalance", "confusion": "twin_cosine"}
    pairs = [("rim", "cosine_max"), ("rim_auto", "cosine_max"), ("rim_auto", "rim"), ("rim_class", "cosine_max"),
             ("rim_exclude_self", "rim"), ("rim_alpha0.5", "rim"), ("prototype", "rim"), ("rim_class", "rim")]
    for setting, column in swept.items():
        groups: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in sim:
            if r["setting"] == setting:
                groups[f"{column} {float(r[column]):g}"][r["method"]][r["seed"]] = float(r["accuracy"])
        table(f"simulation, {setting}", groups, pairs)
    for name, column in (("domain_shift.csv", "shift"),):
        groups = defaultdict(lambda: defaultdict(dict))
        for r in _read(name):
            groups[f"{column} {float(r[column]):g}"][r["method"]][r["seed"]] = float(r["accuracy"])
        table("domain shift", groups, pairs)
    temp = _read("temperature.csv")
    for condition in sorted({r["condition"] for r in temp}):
        groups = defaultdict(lambda: defaultdict(dict))
        rows = [r for r in temp if r["condition"] == condition]
        fixed = [r for r in rows if not r["temperature"]]
        for t in sorted({float(r["temperature"]) for r in rows if r["temperature"]}):
            for r in fixed:
                groups[f"T {t:g}"][r["method"]][r["seed"]] = float(r["accuracy"])
            for r in rows:
                if r["temperature"] and float(r["temperature"]) == t:
                    groups[f"T {t:g}"][r["method"]][r["seed"]] = float(r["accuracy"])
        table(f"temperature, {condition}", groups, [("rim", "cosine_max"), ("rim_class", "cosine_max")])


if __name__ == "__main__":
    main()
