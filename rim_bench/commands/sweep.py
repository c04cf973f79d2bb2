"""`rim-bench sweep`: one experiment over a grid (or a random sample) of config values.

A sweep file (``configs/sweep/<name>.yaml`` or a path) names the values to try::

    method: grid              # grid (every combination) | random (num_samples of them)
    num_samples: null         # random only
    seed: 0                   # random only
    parameters:
      references.diffusion.n_subcategories: [1, 2, 4, 6, 8, 10]
      references.diffusion.attn_threshold: [0.2, 0.3, 0.4, 0.5, 0.6]

Or, as Hydra's multirun takes them, values on the command line: each ``key=a,b,c`` (a comma
outside brackets and quotes) is a parameter of a grid, beside a sweep file's or alone::

    rim-bench sweep experiment=smoke matcher.rim.temperature=0.05,0.1 matcher.rim.divergence=kl,js

A value that itself holds a comma is bracketed (a list: ``key=[16,32],[8]`` sweeps two lists) or
quoted (a string: ``key="'a,b'",c``). Each item is read as the same key on its own would be.

Every point is an ordinary `rim-bench test` run in ``<output_dir>/point-<i>-<hash of its config>/``, so
it reuses every cache: each image's regions are computed once for the whole sweep, and
generated references once per generation setting (banks over fewer subcategories are
assembled from them). A point whose metrics.json exists is not run again, so an
interrupted sweep resumes. The sweep writes ``sweep.csv``, ``sweep.md`` (and prints it, the best
point in bold) and one plot per parameter (``mIoU_vs_<full key>.png``, `sweep_figure`: categories
for strings and bools, a log axis for values that span a factor of 5, what was held fixed below).
It holds its folder while it runs (`rim_bench.core.output_lock`).
Without ``output_dir`` the sweep's folder is ``outputs/sweep-<experiment>-<sweep>-<hash of the
points' configs>``: the same command run again resumes there.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf

from rim_bench.core.config import CONFIG_DIR, as_overrides, error_text, load_config
from rim_bench.core.errors import ConfigError
from rim_bench.core.io import atomic_path, atomic_write_text, file_in, safe_name
from rim_bench.core.output_lock import writing_into
from rim_bench.run.reuse import run_or_reuse, runs_hash
from rim_bench.run.tables import markdown_table
from rim_bench.run.weights import require_weights

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS = ("grid", "random")
# Points one sweep runs at most: each is a whole test run (a thousand are days at a real benchmark's size),
# and each point's config is built and checked before the first runs.
MAX_POINTS = 1000
METRICS = ("mIoU", "mAcc", "aAcc")
LOG_SPAN = 5  # a positive numeric parameter whose largest value is this many times its smallest gets a log axis


@dataclass(frozen=True)
class SweepSpec:
    name: str
    method: str
    parameters: dict[str, list]
    num_samples: int | None = None
    seed: int = 0
    path: str = "sweep"  # the sweep file, named in errors about its keys and values


def load_sweep(name_or_path: str) -> SweepSpec:
    """Read and check a sweep file (a name in configs/sweep/ or a path)."""
    is_path = name_or_path.endswith((".yaml", ".yml"))
    path = Path(name_or_path) if is_path else CONFIG_DIR / "sweep" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml"))
        raise ConfigError(f"sweep '{name_or_path}' not found: no file {path}; known sweeps: {', '.join(known)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {error_text(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'parameters:' (and 'method:', 'num_samples:'), "
                          f"got a {type(raw).__name__}")
    method = raw.get("method", "grid")
    parameters = raw.get("parameters") or {}
    if method not in METHODS:
        raise ConfigError(f"{path}: method '{method}' unknown (choose {', '.join(METHODS)})")
    if not isinstance(parameters, dict) or not parameters or any(
            not isinstance(v, list) or not v for v in parameters.values()):
        raise ConfigError(f"{path}: 'parameters' must map config keys to non-empty lists of values (the grid is empty)")
    num_samples = raw.get("num_samples")
    if method == "random" and (not isinstance(num_samples, int) or num_samples < 1):
        raise ConfigError(f"{path}: a random sweep needs num_samples, a positive integer (got {num_samples!r})")
    unknown = set(raw) - {"method", "parameters", "num_samples", "seed"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (a sweep file has method, "
                          "parameters, num_samples and seed)")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{path}: seed must be a non-negative integer, got {seed!r}")
    return SweepSpec(path.stem, method, parameters, num_samples, seed, str(path))


def sweep_from_command_line(overrides: list[str]) -> tuple[list[str], SweepSpec]:
    """`rim-bench sweep`'s arguments: the plain overrides, and the sweep that ``sweep=NAME`` and
    the ``key=a,b,...`` items make together (a grid over the items when no file is named)."""
    files = [o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")]
    plain, inline = [], {}
    for item in (o for o in overrides if not o.startswith("sweep=")):
        key, _, value = item.partition("=")
        values = split_values(value)
        if len(values) == 1:
            plain.append(item)
        elif key in inline:
            raise ConfigError(f"command line: {key} is swept twice; give its values once, as {key}=a,b,c")
        else:
            inline[key] = [_parsed(key, v) for v in values]
    if len(files) > 1 or not (files or inline):
        raise ConfigError("sweep: give one sweep=NAME (configs/sweep/NAME.yaml) or sweep=PATH.yaml, or values to "
                          "sweep on the command line as key=a,b,c")
    if not files:
        name = "-".join(key.rsplit(".", 1)[-1] for key in inline)
        return plain, SweepSpec(name, "grid", inline, path="command line")
    spec = load_sweep(files[0])
    both = sorted(set(spec.parameters) & set(inline))
    if both:
        raise ConfigError(f"command line: {', '.join(both)} also swept in {spec.path}; give its values in one place")
    return plain, SweepSpec(spec.name, spec.method, {**spec.parameters, **inline}, spec.num_samples, spec.seed,
                            spec.path)


def split_values(value: str) -> list[str]:
    """`value` cut at its commas outside brackets, braces and quotes: ``0.05,0.1`` → two items,
    ``[16,32]`` and ``'a,b'`` one; an empty item, or a bracket left open, is an error."""
    items, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(value):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    items.append(value[start:])
    if depth > 0 or (quote and "," in value):  # its commas would all be inside: a typo, not one value
        opened = "quote" if quote else "bracket"
        raise ConfigError(f"command line: '{value}' opens a {opened} it does not close; close it "
                          "(key=[a,b] is one list, key=a,b two values)")
    if len(items) > 1 and not all(item.strip() for item in items):
        raise ConfigError(f"command line: '{value}' has an empty value between its commas")
    return items


def _parsed(key: str, value: str) -> Any:
    """One swept value, read as ``key=value`` alone on the command line is (OmegaConf's YAML: ``1e-3`` a float)."""
    try:
        layer = OmegaConf.from_dotlist([f"{key}={value}"])
    except Exception as e:  # yaml.YAMLError and OmegaConf errors alike
        raise ConfigError(f"command line: cannot parse {key}={value}: {error_text(e)}") from None
    found = OmegaConf.select(layer, key)
    return OmegaConf.to_container(found) if OmegaConf.is_config(found) else found


def count_points(spec: SweepSpec) -> int:
    """How many points `spec` runs, from its axes alone (nothing listed): the grid's size, or
    `num_samples` of it."""
    grid = math.prod(len(values) for values in spec.parameters.values())
    return grid if spec.method == "grid" else min(grid, spec.num_samples or 0)


def check_size(spec: SweepSpec) -> int:
    """`count_points`, refused above `MAX_POINTS` with the size and the way out (before a point is made).

    Raises:
        ConfigError: the sweep is too large.
    """
    count = count_points(spec)
    if count > MAX_POINTS:
        axes = " x ".join(f"{len(values)} {key}" for key, values in spec.parameters.items())
        way_out = ("a smaller num_samples" if spec.method == "random" else
                   "fewer values, or a sweep file (sweep=FILE.yaml) with method: random and num_samples: N")
        raise ConfigError(f"{spec.path}: the sweep has {count:,} points ({axes}), over the {MAX_POINTS:,} one sweep "
                          f"runs (each point is a whole test run); give {way_out}")
    return count


def points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """The points, made one at a time once the sweep's size is checked (`check_size`): every
    combination in file order, or `num_samples` distinct ones drawn with `seed`."""
    check_size(spec)
    keys = list(spec.parameters)
    if spec.method == "grid":
        return (dict(zip(keys, values)) for values in itertools.product(*spec.parameters.values()))
    assert spec.num_samples is not None  # load_sweep requires it for a random sweep
    return (grid_point(spec.parameters, i) for i in draw_indices(spec.parameters, spec.num_samples, spec.seed))


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point of `spec` (`points`), listed."""
    return list(points(spec))


def draw_indices(parameters: dict[str, list], n: int, seed: int) -> list[int]:
    """`n` distinct grid indices (all of them if the grid is smaller), drawn with `seed` without
    listing the grid: 5 keys of 60 values are 7.8e8 points, 10 keys of 100 overflow `len(range)`."""
    total = math.prod(len(values) for values in parameters.values())
    rng = random.Random(seed)
    if 2 * n > total:  # most of a small grid: a shuffle of its indices
        return rng.sample(range(total), min(n, total))
    drawn: dict[int, None] = {}  # ordered: the points run in the order drawn
    while len(drawn) < n:
        drawn[rng.randrange(total)] = None
    return list(drawn)


def grid_point(parameters: dict[str, list], index: int) -> dict[str, Any]:
    """The grid's point at `index` in `itertools.product` order (the last key varies fastest)."""
    point = {}
    for key, values in reversed(parameters.items()):
        index, i = divmod(index, len(values))
        point[key] = values[i]
    return {key: point[key] for key in parameters}


def run_sweep(base: list[str], spec: SweepSpec, layers: tuple[str, ...] = ()) -> list[dict]:
    """Run every point of `spec` on the config that `base` overrides (and config `layers`, e.g.
    ``real/rim``) make; returns the table rows."""
    points = expand(spec)  # counted before any is made (`check_size`)
    # Every point's config is checked before anything runs: a typo fails at once, blamed on the sweep file.
    configs = [load_config(base, layers=layers, extra=(f"{spec.path} (point {i})", as_overrides(point)))
               for i, point in enumerate(points)]
    require_weights(configs)  # every point's models, in seconds, before the first point runs
    root_cfg = configs[0]
    # Named by what it runs, so the same command run again resumes in the same folder.
    experiment = safe_name(root_cfg.experiment or "default")
    out = Path(root_cfg.output_dir or f"outputs/sweep-{experiment}-{safe_name(spec.name)}-{runs_hash(configs)}")
    rows = []
    with writing_into(out, "sweep"):  # each point holds and claims its own sub-folder too
        for index, (point, cfg) in enumerate(zip(points, configs)):
            point_dir = out / f"point-{index:03d}-{runs_hash([cfg])}"  # another base config: another folder
            if cfg.wandb.group is None:
                cfg.wandb.group = out.name  # the points of one sweep are one W&B group
            metrics = run_or_reuse(cfg, point_dir, f"[{index + 1}/{len(points)}] {point}")
            rows.append({**point, **{m: metrics[m] for m in METRICS}, "dir": point_dir.name})
        table = write_tables(rows, list(spec.parameters), out)
        fixed = ", ".join([f"experiment={root_cfg.experiment or 'none'}",
                           *(o for o in base if not o.startswith(("experiment=", "output_dir=")))])
        plots = plot_sweep(rows, list(spec.parameters), out, fixed)
        if root_cfg.logger == "wandb":
            from rim_bench.core.config import resolve
            from rim_bench.run.tracking import log_summary

            run_dir = log_summary(resolve(root_cfg.copy()), out, rows, plots)
            print(f"W&B: the points and {run_dir.name} (table and plots) in group {root_cfg.wandb.group or out.name}")
    best = max(rows, key=lambda r: r["mIoU"])
    best_at = ", ".join(f"{key}={best[key]}" for key in spec.parameters)
    print(f"\n{table}\nbest (in bold): mIoU {best['mIoU']:.2f} at {best_at} ({best['dir']})\n"
          f"sweep: {out}/sweep.csv, {out}/sweep.md and plots")
    return rows


def write_tables(rows: list[dict], keys: list[str], out: Path) -> str:
    """``sweep.csv`` and ``sweep.md``: one row per point, best mIoU in bold; returns sweep.md's text."""
    columns = [*keys, *METRICS, "dir"]
    with atomic_path(out / "sweep.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    best = max(r["mIoU"] for r in rows)
    cells = [[str(r[k]) for k in keys] + [(f"**{r[m]:.2f}**" if m == "mIoU" and r[m] == best else f"{r[m]:.2f}")
                                          for m in METRICS] for r in rows]
    text = "\n".join(markdown_table(columns[:-1], cells)) + "\n"
    atomic_write_text(out / "sweep.md", text)
    return text


def plot_sweep(rows: list[dict], keys: list[str], out: Path, fixed: str = "") -> list[Path]:
    """One PNG per parameter (`sweep_figure`), ``mIoU_vs_<full key>.png``; returns the files."""
    plt = _pyplot()
    files = []
    for key in keys:
        fig = sweep_figure(rows, key, keys, fixed)
        files.append(file_in(out, f"mIoU_vs_{key}", ".png"))  # the full key: two keys may end in one name
        with atomic_path(files[-1]) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
    return files


def sweep_figure(rows: list[dict], key: str, keys: list[str], fixed: str = "") -> Figure:
    """mIoU against `key`: one series per value of the other parameter (with two), else the mean over
    the others. A numeric parameter is a line, on a log axis when its values are positive and span a
    factor of `LOG_SPAN` or more; any other (strings, bools, null, lists) is categories, points without
    a joining line. The caption says what was held fixed (`fixed`: the base config) and what varies."""
    plt = _pyplot()
    others = [k for k in keys if k != key]
    series: dict[str, dict[Any, list[float]]] = {}
    for r in rows:
        name = f"{others[0]} = {r[others[0]]}" if len(others) == 1 else "mean over the others"
        series.setdefault(name, {}).setdefault(_hashable(r[key]), []).append(r["mIoU"])
    values = list(dict.fromkeys(_hashable(r[key]) for r in rows))
    numeric = _numeric(values)
    fig, ax = plt.subplots(figsize=(5, 3.9), dpi=120)
    for i, (name, points) in enumerate(series.items()):
        means = {x: sum(v) / len(v) for x, v in points.items()}
        label = name if others else None
        if numeric:
            xs = sorted(means)
            ax.plot(xs, [means[x] for x in xs], marker="o", label=label)
        else:  # categories: side by side, a little apart per series so that equal scores stay visible
            offset = 0.08 * (i - (len(series) - 1) / 2)
            ax.plot([values.index(x) + offset for x in means], list(means.values()), marker="o", linestyle="none",
                    label=label)
    if numeric and min(values) > 0 and max(values) / min(values) >= LOG_SPAN:
        ax.set_xscale("log")
        ax.set_xticks(sorted(values), [str(v) for v in sorted(values)])
        ax.minorticks_off()
    elif not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(key)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"mIoU vs {key.split('.')[-1]}")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=7)
    varies = (f"one series per {others[0]}" if len(others) == 1 else f"mean over {', '.join(others)}") if others else ""
    caption = "; ".join(part for part in (f"held fixed: {fixed or 'the base config'}", varies) if part)
    fig.text(0.01, 0.01, textwrap.fill(caption, 90), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, also where a display is set
    import matplotlib.pyplot as plt

    return plt


def _hashable(value: Any) -> Any:
    """A swept value as a dict key: a list (``attention_resolutions=[16,32]``) as its text."""
    return str(value) if isinstance(value, (list, dict)) else value


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
