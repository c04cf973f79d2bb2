"""`rim-bench compare`: several methods on one benchmark, with shared caches, in one table.

    rim-bench compare experiment=rim_voc21 methods=[rim,cosine,prototype] data.root=DATA ...

A method is a file in ``configs/method/`` merged over the experiment (``method=NAME``). The table shows
each method's cost (wall seconds, images/s, peak memory) next to its mIoU. Each runs as an
ordinary test run in ``<output_dir>/<method>/`` (a finished one is not run again), so
regions and references are computed once for all. Without ``output_dir`` the folder is
``outputs/compare-<experiment>-<hash of the methods' configs>``, so a rerun resumes. Each
measured row names its protocol (``protocol=NAME``, configs/protocol/) and background rule.
Published numbers for the benchmark (``experiments/published.yaml``) are shown in a separate,
labelled table, never mixed with what was measured, with the protocol each was measured
under; a published number is marked only where this comparison ran that peer's own method
with all its own settings (``method=sclip`` on a benchmark its settings cover, nothing overridden).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import yaml

from rim_bench.core.config import CONFIG_DIR, load_config
from rim_bench.core.config_index import PACKAGE_DIR
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_write_text, safe_name
from rim_bench.core.output_lock import writing_into
from rim_bench.run.assembly import Assembly
from rim_bench.run.reuse import run_or_reuse, runs_hash
from rim_bench.run.tables import COST_HEADERS, cost_cells, markdown_table, run_cost

PUBLISHED = PACKAGE_DIR / "data" / "published.yaml"
COLUMNS = ("mIoU", "mAcc", "aAcc")


def parse_methods(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``methods=[a,b]`` from the other overrides; check each method has a file."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("methods=")]
    if len(given) != 1:
        raise ConfigError("compare: give methods=[name,...] once (files in configs/method/)")
    methods = yaml.safe_load(given[0])
    return check_methods(methods, "methods", given[0]), [o for o in overrides if not o.startswith("methods=")]


def check_methods(methods, where: str, given: str) -> list[str]:
    """`methods` (a name or a list, as read from `where`) as a list of names with a file in configs/method/,
    or paths to method files of one's own (``.yaml``)."""
    methods = [methods] if isinstance(methods, str) else methods
    known = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))
    if not methods or not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"{where}: expected a list like [rim,cosine], got {given!r}")
    for method in methods:
        if method.endswith((".yaml", ".yml")) and not Path(method).is_file():
            raise ConfigError(f"{where}: no method file '{method}'")
        if not method.endswith((".yaml", ".yml")) and method not in known:
            raise ConfigError(f"{where}: unknown method '{method}' (known: {', '.join(known)}, or a .yaml path)")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:  # one folder and one row per method: the second would only rerun or reread the first
        raise ConfigError(f"{where}: {', '.join(twice)} given more than once in {given!r}; list each method once")
    return methods


def run_compare(overrides: list[str]) -> list[dict]:
    """Run every method and write ``compare.md`` (measured, then published) and ``compare.json``."""
    methods, base = parse_methods(overrides)
    configs = {m: load_config([*base, f"method={m}"]) for m in methods}  # all checked before any runs
    first = next(iter(configs.values()))
    # Named by what it runs, so the same command run again resumes in the same folder.
    out = Path(first.output_dir or f"outputs/compare-{safe_name(first.experiment or 'default')}-"
                                   f"{runs_hash(list(configs.values()))}")
    rows, described = [], {}
    with writing_into(out, "compare"):  # each method's run holds and claims its own sub-folder too
        for cfg in configs.values():
            method = str(cfg.method)  # a method file's name (its stem, for a path)
            metrics = run_or_reuse(cfg, out / safe_name(method), method)
            described[method] = Assembly(cfg).method().describe()
            rows.append({"method": method, **{c: metrics[c] for c in COLUMNS}, "num_images": metrics["num_images"],
                         "protocol": cfg.protocol or (f"{method}'s own" if described[method]["own_settings"] else "-"),
                         "background": described[method]["background"], **run_cost(metrics)})
        benchmark = first.data.name
        own = {m for m, d in described.items() if d["own_settings"]}
        text = comparison_markdown(rows, benchmark, published(benchmark), own)
        atomic_write_text(out / "compare.md", text)
        atomic_write_text(out / "compare.json", json.dumps({"benchmark": benchmark, "measured": rows}, indent=2))
    print(f"\n{text}\ncomparison: {out}/compare.md")
    return rows


def published(benchmark: str) -> list[dict]:
    """Published mIoU on `benchmark` with each number's source and protocol (may be empty),
    ``preset``: the name of the rim-bench protocol (configs/protocol/) it was measured under, if
    any, and ``method_file``: the rim-bench method (configs/method/) that is the peer's own
    inference with its own settings (``method: sclip`` in the file), if any."""
    methods = (yaml.safe_load(PUBLISHED.read_text()) or {}).get("methods") or {}
    presets = {name: entry.get("protocol") for name, entry in methods.items()}
    return [{**n, "preset": presets[n["method"]] if _is_preset(presets[n["method"]]) else None,
             "method_file": methods[n["method"]].get("method")}
            for n in published_numbers() if n["benchmark"] == benchmark]


def _is_preset(protocol) -> bool:
    return isinstance(protocol, str) and (CONFIG_DIR / "protocol" / f"{protocol}.yaml").is_file()


def published_numbers() -> list[dict]:
    """Every number in ``experiments/published.yaml`` as
    ``{"method", "benchmark", "mIoU", "source", "protocol"}``, in file order.

    Read tolerantly, as the file grows: a number is plain or a mapping with ``miou`` (or
    ``value``) and its own ``source`` / ``protocol``; a method's ``protocol`` is a text, the
    name of an entry of a top-level ``protocols:`` mapping, a mapping per benchmark, or a
    mapping of settings. Protocols come back as one line of text ("" when not recorded).
    """
    raw = yaml.safe_load(PUBLISHED.read_text()) or {}
    protocols = raw.get("protocols") or {}
    numbers = []
    for method, entry in (raw.get("methods") or {}).items():
        for benchmark, value in (entry.get("miou") or {}).items():
            cell = value if isinstance(value, dict) else {"miou": value}
            miou = cell.get("miou", cell.get("value"))
            if miou is None:
                continue
            protocol = cell.get("protocol", entry.get("protocol"))
            if isinstance(protocol, dict) and benchmark in protocol:
                protocol = protocol[benchmark]
            numbers.append({"method": method, "benchmark": benchmark, "mIoU": float(miou),
                            "source": str(cell.get("source", entry.get("source", ""))),
                            "protocol": _protocol_text(protocol, protocols)})
    return numbers


def _protocol_text(protocol, named: dict) -> str:
    if isinstance(protocol, str) and protocol in named:
        return f"{protocol}: {_protocol_text(named[protocol], {})}"
    if isinstance(protocol, dict):
        return ", ".join(f"{k} ({_protocol_text(v, named)})" if isinstance(v, dict)
                         else f"{k}={_protocol_text(v, named)}" for k, v in protocol.items())
    if isinstance(protocol, list):
        return ", ".join(_protocol_text(p, named) for p in protocol)
    return "" if protocol is None else str(protocol)


def comparison_markdown(rows: list[dict], benchmark: str, reported: list[dict],
                        own: Collection[str] = ()) -> str:
    """The measured table (with each run's cost, protocol and background rule), then the
    published one; a published row is marked when its method file is among `own`, the methods
    this comparison ran with the peer's own settings (its method's `describe`)."""
    headers = ["method", "mIoU", "mAcc", "aAcc", "images", *COST_HEADERS, "protocol", "background"]
    measured = [[r["method"], f"{r['mIoU']:.2f}", f"{r['mAcc']:.2f}", f"{r['aAcc']:.2f}", str(r["num_images"]),
                 *cost_cells(r), r.get("protocol", "-"), r.get("background", "-")] for r in rows]
    lines = [f"## Measured by rim-bench on {benchmark}", "", *markdown_table(headers, measured)]
    if reported:
        published_rows = [[r["method"], f"{r['mIoU']:.1f}", r.get("protocol") or "-",
                           f"yes ({r['method_file']})" if r.get("method_file") in own else "no", r["source"]]
                          for r in reported]
        lines += ["", f"## Published (not measured here; from experiments/published.yaml) on {benchmark}", "",
                  *markdown_table(["method", "mIoU", "protocol", "measured here with its own method and settings",
                                   "source"], published_rows)]
    return "\n".join(lines) + "\n"
