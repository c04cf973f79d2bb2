"""`rim-bench compare`: several methods on one benchmark, with shared caches, in one table.

    rim-bench compare experiment=rim_voc21 methods=[rim,cosine,prototype] data.root=DATA ...

A method is a file in ``configs/baseline/`` merged over the experiment. The table shows
each method's cost (wall seconds, images/s, peak memory) next to its mIoU. Each runs as an
ordinary test run in ``<output_dir>/<method>/`` (a finished one is not run again), so
regions and references are computed once for all. Published numbers for the benchmark
(``experiments/published.yaml``) are shown in a separate, labelled table, never mixed
with what was measured.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import yaml

from rim_bench.config import CONFIG_DIR, load_config
from rim_bench.errors import ConfigError
from rim_bench.io import atomic_write_text
from rim_bench.report import COST_HEADERS, cost_cells, run_cost
from rim_bench.sweep import same_result

PUBLISHED = CONFIG_DIR.parent / "experiments" / "published.yaml"
COLUMNS = ("mIoU", "mAcc", "aAcc")


def parse_methods(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``methods=[a,b]`` from the other overrides; check each method has a file."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("methods=")]
    if len(given) != 1:
        raise ConfigError("compare: give methods=[name,...] once (files in configs/baseline/)")
    methods = yaml.safe_load(given[0])
    methods = [methods] if isinstance(methods, str) else methods
    known = sorted(p.stem for p in (CONFIG_DIR / "baseline").glob("*.yaml"))
    if not methods or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"methods: expected a list like [rim,cosine], got {given[0]!r}")
    for method in methods:
        if method not in known:
            raise ConfigError(f"methods: unknown method '{method}' (known: {', '.join(known)})")
    return methods, [o for o in overrides if not o.startswith("methods=")]


def run_compare(overrides: list[str]) -> list[dict]:
    """Run every method and write ``compare.md`` (measured, then published) and ``compare.json``."""
    from rim_bench.runner import run_test

    methods, base = parse_methods(overrides)
    configs = {m: load_config(base, layers=[f"baseline/{m}"]) for m in methods}  # all checked before any runs
    first = next(iter(configs.values()))
    out = Path(first.output_dir or f"outputs/compare-{first.experiment or 'default'}-{datetime.now():%Y%m%d-%H%M%S}")
    rows = []
    for method, cfg in configs.items():
        metrics_file = out / method / "metrics.json"
        if metrics_file.is_file() and same_result(metrics_file, cfg):
            metrics = json.loads(metrics_file.read_text())
        else:
            cfg.output_dir = str(out / method)
            metrics = run_test(cfg)
        rows.append({"method": method, **{c: metrics[c] for c in COLUMNS}, "num_images": metrics["num_images"],
                     **run_cost(metrics)})
    benchmark = first.data.name
    text = comparison_markdown(rows, benchmark, published(benchmark))
    atomic_write_text(out / "compare.md", text)
    atomic_write_text(out / "compare.json", json.dumps({"benchmark": benchmark, "measured": rows}, indent=2))
    print(f"\n{text}\ncomparison: {out}/compare.md")
    return rows


def published(benchmark: str) -> list[dict]:
    """Published mIoU on `benchmark` with each number's source (may be empty)."""
    table = yaml.safe_load(PUBLISHED.read_text())["methods"]
    return [{"method": name, "mIoU": entry["miou"][benchmark], "source": entry["source"]}
            for name, entry in table.items() if entry["miou"].get(benchmark) is not None]


def comparison_markdown(rows: list[dict], benchmark: str, reported: list[dict]) -> str:
    headers = ["method", "mIoU", "mAcc", "aAcc", "images", *COST_HEADERS]
    lines = [f"## Measured by rim-bench on {benchmark}", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += [f"| {r['method']} | {r['mIoU']:.2f} | {r['mAcc']:.2f} | {r['aAcc']:.2f} | {r['num_images']} | "
              + " | ".join(cost_cells(r)) + " |" for r in rows]
    if reported:
        lines += ["", f"## Published (not measured here; from experiments/published.yaml) on {benchmark}", "",
                  "| method | mIoU | source |", "|---|---|---|"]
        lines += [f"| {r['method']} | {r['mIoU']:.1f} | {r['source']} |" for r in reported]
    return "\n".join(lines) + "\n"
