"""`rim-bench suite NAME`: several benchmarks x several methods in one table, published numbers beside.

    rim-bench suite rim_benchmarks data.root=DATA proposer.sam.checkpoint=sam_vit_h_4b8939.pth

A suite file (``configs/suite/<name>.yaml`` or a path) names the cells::

    benchmarks:                # column → experiment (configs/experiment/); a list: each name is its own column
      voc21: rim_voc21
      context60: rim_context60
    methods: [rim, cosine]     # rows: files in configs/method/, merged over each benchmark's experiment
    sweeps: [tau_subcategories] # optional: configs/sweep/ files, each run on every (benchmark, method)
    overrides: [data.max_images=8]   # optional: key=value for every cell, before the command line's

Each (benchmark, method) cell is an ordinary `rim-bench test` run in ``<out>/<benchmark>/<method>/``
on the shared caches (regions once per image and proposer, a bank once per vocabulary), so the
methods after the first on a benchmark mostly rerun matching. The default ``<out>`` is
``outputs/suite-<name>-<hash of every cell's result settings>``: the same command finds the
same folder, and a cell whose metrics.json there has the same result hash is not run again.

Every benchmark's data is opened before any model loads. A cell that fails is reported in the
table with its one-line reason and the other cells still run. Under DDP
(``trainer.devices=N trainer.strategy=ddp``, srun, torchrun) each cell runs as `test` does:
processes that Lightning starts rerun this command, skip the finished cells and join the
running one. Writes ``suite.md``, ``suite.csv``, ``suite.json`` and ``suite.html``: the mIoU
of each method (row) on each benchmark (column) and their mean, then apart, labelled, the
published numbers for the same benchmarks with their sources and protocols
(``experiments/published.yaml``), and each sweep's best point.
"""

from __future__ import annotations

import csv
import html
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig

from rim_bench.commands.compare import check_methods, published_numbers
from rim_bench.commands.sweep import SweepSpec, load_sweep, run_sweep
from rim_bench.core.config import CONFIG_DIR, as_overrides, config_hash, load_config, resolve
from rim_bench.core.errors import ConfigError, RimBenchError, error_line
from rim_bench.core.io import atomic_path, atomic_write_json, atomic_write_text
from rim_bench.core.output_lock import writing_into
from rim_bench.run.reuse import result_hash, run_or_reuse
from rim_bench.run.tables import html_page, markdown_table
from rim_bench.run.weights import require_weights

SUITE_DIR = CONFIG_DIR / "suite"
KEYS = ("benchmarks", "methods", "sweeps", "overrides")
PUBLISHED_NOTE = "As printed in each source; the mean is computed here, over these columns, where all are printed."
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # columns and methods become folder names


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    benchmarks: dict[str, str]  # column → experiment
    methods: list[str]  # files in configs/method/
    sweeps: list[SweepSpec]
    overrides: list[str]


@dataclass
class Cell:
    """One (benchmark, method) run, or one sweep on it when `sweep` is set."""

    benchmark: str
    method: str
    overrides: list[str]  # experiment=..., the suite's and the command line's overrides
    cfg: DictConfig
    dir: Path
    sweep: SweepSpec | None = None
    metrics: dict | None = None  # metrics.json of a run; a sweep's best point
    points: int = 0  # a sweep's point count
    error: str | None = None  # one line, when it failed

    @property
    def label(self) -> str:
        return f"{self.benchmark} / {self.method}" + (f" / sweep {self.sweep_name}" if self.sweep else "")

    @property
    def sweep_name(self) -> str:
        return self.sweep.name if self.sweep else ""

    @property
    def miou(self) -> float:
        """The mIoU of a finished cell (of a sweep's best point)."""
        if self.metrics is None:
            raise ValueError(f"{self.label} has no result")
        return self.metrics["mIoU"]


def load_suite(name_or_path: str) -> SuiteSpec:
    """Read and check a suite file (a name in configs/suite/ or a path)."""
    path = Path(name_or_path) if name_or_path.endswith((".yaml", ".yml")) else SUITE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))
        raise ConfigError(f"suite '{name_or_path}' not found: no file {path}; known suites: {', '.join(known)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or set(raw) - set(KEYS):
        extra = sorted(set(raw) - set(KEYS)) if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: expected a mapping of {', '.join(KEYS)}; got {extra}")
    benchmarks = raw.get("benchmarks")
    if isinstance(benchmarks, list):
        benchmarks = {b: b for b in benchmarks}
    if not isinstance(benchmarks, dict) or not benchmarks or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in benchmarks.items()):
        raise ConfigError(f"{path}: 'benchmarks' must be a list of experiments or a mapping column: experiment, "
                          f"got {benchmarks!r}")
    methods = check_methods(raw.get("methods"), f"{path}: methods", str(raw.get("methods")))
    for name in [*benchmarks, *methods]:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{path}: '{name}' cannot name a folder; use letters, digits, '.', '_' and '-'")
    sweeps, overrides = raw.get("sweeps") or [], raw.get("overrides") or []
    if not isinstance(sweeps, list) or not all(isinstance(s, str) for s in sweeps):
        raise ConfigError(f"{path}: 'sweeps' must be a list of sweep names (configs/sweep/), got {sweeps!r}")
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ConfigError(f"{path}: 'overrides' must be a list of key=value strings, got {overrides!r}")
    _refuse_experiment(overrides, str(path))
    return SuiteSpec(path.stem, benchmarks, methods, [load_sweep(s) for s in sweeps], overrides)


def run_suite(spec: SuiteSpec, overrides: list[str]) -> list[Cell]:
    """Run (or resume) every cell and sweep of `spec` with the command line's `overrides`,
    write the tables, and return the cells (failed ones have ``error`` set)."""
    cells, sweeps, out = plan_cells(spec, overrides)
    require_weights([c.cfg for c in cells])  # every cell's models (a sweep's points: when it starts), in seconds
    check_data(cells + sweeps)
    with writing_into(out, "suite"):  # each cell's run and each sweep holds and claims its own sub-folder too
        _run_cells(spec, cells, sweeps, out)
    return cells + sweeps


def _run_cells(spec: SuiteSpec, cells: list[Cell], sweeps: list[Cell], out: Path) -> None:
    """Run the cells and sweeps not failed yet, then write the tables."""
    todo = [c for c in cells + sweeps if c.error is None]
    for index, cell in enumerate(todo):
        label = f"[{index + 1}/{len(todo)}] {cell.label}"
        (cell.dir / "error.txt").unlink(missing_ok=True)  # an earlier try's crash
        try:
            if cell.sweep is None:
                cell.metrics = run_or_reuse(cell.cfg.copy(), cell.dir, label)
            else:
                print(label)
                rows = run_sweep(cell.overrides, cell.sweep)
                cell.metrics, cell.points = max(rows, key=lambda r: r["mIoU"]), len(rows)  # the best point
        except RimBenchError as e:
            cell.error = error_line(e)
        except Exception as e:  # noqa: BLE001 - one cell's crash (a CUDA OOM, say) must not lose the others
            first_line = (str(e).strip().splitlines() or [""])[0]
            cell.error = f"{type(e).__name__}: {first_line} (traceback in {cell.dir}/error.txt)"
            cell.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cell.dir / "error.txt", traceback.format_exc())
        if cell.error:
            print(f"{cell.label}: failed: {cell.error}")

    if _rank_zero():  # processes DDP started only ran the cells
        write_tables(spec, cells, sweeps, out)
        if cells[0].cfg.logger == "wandb":
            from rim_bench.run.tracking import log_summary

            rows = [_long_row(c) for c in cells]
            summary = {f"mIoU/{r['benchmark']}/{r['method']}": r["mIoU"] for r in rows}
            run_dir = log_summary(resolve(cells[0].cfg.copy()), out, rows, [], kind="suite", summary=summary)
            print(f"W&B: the cells and {run_dir.name} (the table) in group {cells[0].cfg.wandb.group}")
        print(f"\n{(out / 'suite.md').read_text()}\nsuite: {out}/suite.md, suite.csv, suite.html")


def failure_summary(results: list[Cell]) -> str | None:
    """E.g. "2 of 8 cells and 1 of 2 sweeps failed"; None when nothing failed."""
    counts = [f"{sum(bool(r.error) for r in group)} of {len(group)} {kind}"
              for kind, group in (("cells", [r for r in results if not r.sweep]),
                                  ("sweeps", [r for r in results if r.sweep]))
              if any(r.error for r in group)]
    return f"{' and '.join(counts)} failed" if counts else None


def plan_cells(spec: SuiteSpec, overrides: list[str]) -> tuple[list[Cell], list[Cell], Path]:
    """Every cell's config (all loaded before anything runs, so a typo fails at once), the
    sweeps on them, and the suite's folder."""
    _refuse_experiment(overrides, "command line")
    cells = []
    for benchmark, experiment in spec.benchmarks.items():
        for method in spec.methods:
            cell_overrides = [f"experiment={experiment}", *spec.overrides, *overrides, f"method={method}"]
            cfg = load_config(cell_overrides)
            cells.append(Cell(benchmark, method, cell_overrides, cfg, Path()))
    out = output_folder(spec, cells)
    for cell in cells:
        cell.dir = out / cell.benchmark / cell.method
        if cell.cfg.logger == "wandb" and cell.cfg.wandb.group is None:
            cell.overrides.append(f"wandb.group={out.name}")  # the cells of one suite are one W&B group
            cell.cfg.wandb.group = out.name
    sweeps = []
    for cell in cells:
        for sweep in spec.sweeps:
            folder = out / cell.benchmark / f"sweep-{sweep.name}-{cell.method}"
            sweep_overrides = [*cell.overrides, *as_overrides({"output_dir": str(folder)})]
            sweeps.append(Cell(cell.benchmark, cell.method, sweep_overrides, cell.cfg, folder, sweep=sweep))
    return cells, sweeps, out


def output_folder(spec: SuiteSpec, cells: list[Cell]) -> Path:
    """``output_dir`` if given, else a folder named by what the suite computes (every cell's
    result hash and the sweeps' grids), so that rerunning the same command resumes there.
    Logging, devices and workers do not change it: a rerun on more GPUs resumes too."""
    if cells[0].cfg.output_dir:
        return Path(cells[0].cfg.output_dir)
    what = {"cells": {f"{c.benchmark}/{c.method}": result_hash(c.cfg) for c in cells},
            "sweeps": [asdict(s) for s in spec.sweeps]}
    return Path("outputs") / f"suite-{spec.name}-{config_hash(what, 8)}"


def check_data(cells: list[Cell]) -> None:
    """Open each benchmark's data (the cheap layout checks, no model) and fail every cell of a
    benchmark whose data is missing or malformed, printing one line per benchmark."""
    from rim_bench.run.datasets import build_dataset

    reasons: dict[str, str | None] = {}  # data settings' hash → why they cannot be read
    reported = set()
    for cell in cells:
        data = resolve(cell.cfg.copy()).data
        key = config_hash(data)
        if key not in reasons:
            try:
                build_dataset(data)
                reasons[key] = None
            except RimBenchError as e:
                reasons[key] = error_line(e)
        cell.error = reasons[key]
        if cell.error and cell.benchmark not in reported:
            reported.add(cell.benchmark)
            print(f"{cell.benchmark}: {cell.error}")


def write_tables(spec: SuiteSpec, cells: list[Cell], sweeps: list[Cell], out: Path) -> None:
    """``suite.md``, ``suite.html`` (measured; published apart; sweeps), ``suite.csv`` (one row
    per method, mIoU per benchmark and the mean) and ``suite.json`` (every cell)."""
    columns = list(spec.benchmarks)
    grid = {(c.method, c.benchmark): c for c in cells}
    # One footnote per benchmark and reason: missing data fails all of a benchmark's cells alike.
    failed: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells + sweeps:
        if cell.error:
            failed.setdefault((cell.benchmark, cell.error), []).append(cell)
    notes = {id(c): i + 1 for i, group in enumerate(failed.values()) for c in group}

    def measured(method: str, column: str) -> str:
        cell = grid[method, column]
        return f"failed ({notes[id(cell)]})" if cell.error else f"{cell.miou:.2f}"

    rows = [[m, *(measured(m, b) for b in columns), _mean([grid[m, b] for b in columns])] for m in spec.methods]
    benchmark_data = {b: grid[spec.methods[0], b].cfg.data.name for b in columns}
    reported = _published_rows(columns, benchmark_data)
    sweep_rows = [[s.benchmark, s.method, s.sweep_name, "-" if s.error else str(s.points),
                   f"failed ({notes[id(s)]})" if s.error else f"{s.miou:.2f}",
                   "-" if s.error else (s.metrics or {})["dir"]] for s in sweeps]

    md = [f"# Suite {spec.name}", "", "## mIoU (%) measured by rim-bench", "",
          *markdown_table(["method", *columns, "mean"], rows)]
    md += ["", ("Each cell is a `rim-bench test` run in `<benchmark>/<method>/` (metrics.json, config.yaml). "
                "The mean is over the benchmarks, shown when none failed.")]
    footnotes = [f"{benchmark} / {', '.join(c.label.split(' / ', 1)[1] for c in group)}: {error}"
                 for (benchmark, error), group in failed.items()]
    if footnotes:
        md += ["", "Failed:", ""] + [f"{i + 1}. {text}" for i, text in enumerate(footnotes)]
    if sweep_rows:
        md += ["", "## Sweeps (best point of each; the full table and plots in its folder)", "",
               *markdown_table(["benchmark", "method", "sweep", "points", "best mIoU", "best point"], sweep_rows)]
    if reported:
        md += ["", "## Published (not measured here; from experiments/published.yaml)", "",
               *markdown_table(["method", *columns, "mean", "source", "protocol"], reported), "", PUBLISHED_NOTE]
    atomic_write_text(out / "suite.md", "\n".join(md) + "\n")
    atomic_write_text(out / "suite.html", _html(spec, columns, rows, footnotes, sweeps, sweep_rows, reported, out))

    with atomic_path(out / "suite.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", *columns, "mean", "failed"])
        for method in spec.methods:
            row = [grid[method, b] for b in columns]
            values = ["" if c.error else c.miou for c in row]
            mean = "" if any(c.error for c in row) else round(sum(c.miou for c in row) / len(row), 4)
            writer.writerow([method, *values, mean, "; ".join(f"{c.benchmark}: {c.error}" for c in row if c.error)])
    atomic_write_json(out / "suite.json", {
        "suite": spec.name, "benchmarks": spec.benchmarks, "methods": spec.methods,
        "cells": [_long_row(c) for c in cells],
        "sweeps": [{**_long_row(s), "sweep": s.sweep_name, "points": s.points} for s in sweeps],
        "published": [n for n in published_numbers() if n["benchmark"] in benchmark_data.values()],
    })


def _published_rows(columns: list[str], benchmark_data: dict[str, str]) -> list[list[str]]:
    """The published numbers on the suite's benchmarks (by data set name), one row per method."""
    by_method: dict[str, dict[str, dict]] = {}
    for number in published_numbers():
        by_method.setdefault(number["method"], {})[number["benchmark"]] = number
    rows = []
    for method, numbers in by_method.items():
        cells = [numbers.get(benchmark_data[b]) for b in columns]
        if not any(cells):
            continue
        given = [c for c in cells if c]
        values = [f"{c['mIoU']:.1f}" if c else "-" for c in cells]
        mean = f"{sum(c['mIoU'] for c in given) / len(given):.1f}" if len(given) == len(cells) else "-"
        sources = "; ".join(dict.fromkeys(c["source"] for c in given))
        protocols = "; ".join(dict.fromkeys(c["protocol"] for c in given if c["protocol"])) or "not recorded"
        rows.append([method, *values, mean, sources, protocols])
    return rows


def _mean(row: list[Cell]) -> str:
    return "-" if any(c.error for c in row) else f"{sum(c.miou for c in row) / len(row):.2f}"


def _long_row(cell: Cell) -> dict:
    m = cell.metrics or {}
    return {"benchmark": cell.benchmark, "method": cell.method, "experiment": cell.cfg.experiment,
            "data": cell.cfg.data.name, "status": "failed" if cell.error else "done",
            **{k: m.get(k) for k in ("mIoU", "mAcc", "aAcc", "num_images")},
            "error": cell.error, "dir": str(cell.dir)}


def _html(spec: SuiteSpec, columns: list[str], rows: list[list[str]], footnotes: list[str],
          sweeps: list[Cell], sweep_rows: list[list[str]], reported: list[list[str]], out: Path) -> str:
    """The page: the same tables as suite.md, every string escaped, a sweep's plots inline."""
    esc = html.escape
    body = [f"<h1>Suite {esc(spec.name)}</h1>", "<h2>mIoU (%) measured by rim-bench</h2>",
            _html_table(["method", *columns, "mean"], rows),
            ("<p>Each cell is a <code>rim-bench test</code> run in <code>&lt;benchmark&gt;/&lt;method&gt;/</code>. "
             "The mean is over the benchmarks, shown when none failed.</p>")]
    if footnotes:
        body.append("<p>Failed:</p><ol>" + "".join(f"<li>{esc(text)}</li>" for text in footnotes) + "</ol>")
    if sweep_rows:
        body += ["<h2>Sweeps (best point of each)</h2>",
                 _html_table(["benchmark", "method", "sweep", "points", "best mIoU", "best point"], sweep_rows)]
        for s in sweeps:
            body += [f'<img src="{esc(p.relative_to(out).as_posix())}" alt="{esc(s.label)}: {esc(p.stem)}">'
                     for p in sorted(s.dir.glob("mIoU_vs_*.png"))]
    if reported:
        body += ["<h2>Published (not measured here; from experiments/published.yaml)</h2>",
                 _html_table(["method", *columns, "mean", "source", "protocol"], reported),
                 f"<p>{html.escape(PUBLISHED_NOTE)}</p>"]
    return html_page("\n".join(body))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _refuse_experiment(overrides: list[str], where: str) -> None:
    if any(o.startswith("experiment=") for o in overrides):
        raise ConfigError(f"{where}: a suite names its experiments under 'benchmarks:'; drop experiment=")


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0  # set by Lightning from the launcher's environment

