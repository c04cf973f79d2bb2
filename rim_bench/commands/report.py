"""`rim-bench report RUN_DIR... [--out DIR]`: result folders → one Markdown and one HTML page.

The pages open with a table of contents linking each section. A folder with ``metrics.json`` is
a run (its summary, per-class IoU as bars, its config and overlays; the runs table names each run's
method, `run_method`); one with ``sweep.md`` a sweep (its table and plots); one with ``compare.md``
or ``suite.md`` a comparison or a suite (its tables, published numbers kept apart, and per-class
IoU bars of its runs side by side: a comparison's methods, a suite's methods on each benchmark).
The pictures are copied into ``<out>/images/``, so the report folder can be moved or shared alone.
Every string from results (run and class names, ids, configs) is HTML-escaped.
``--out`` must be new, empty, or an earlier report's folder (`claim_output`): a file rim-bench
did not write is never replaced; a report that fails takes back the folder it made.
"""

from __future__ import annotations

import html
import itertools
import json
import shutil
import warnings
from pathlib import Path

import yaml

from rim_bench.core.errors import ConfigError, DataError
from rim_bench.core.io import atomic_path, atomic_write_text, file_in, one_line, safe_name
from rim_bench.core.output_lock import claim_output, refuse_inputs_inside, remove_unused
from rim_bench.run.tables import (
    COST_HEADERS,
    WRITTEN_BY,
    cost_cells,
    finite_number,
    html_page,
    markdown_table,
    md_escape,
    run_cost,
)

MAX_OVERLAYS = 4
TABLES = ("sweep.md", "compare.md", "suite.md")  # the table a sweep, comparison or suite folder holds


def build_report(folders: list[Path], out: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into `out` for `folders`; returns their paths."""
    refuse_inputs_inside(out / "images", folders, "--out")  # where pictures are copied
    found = [f for f in folders if (f / "metrics.json").is_file()]
    sweeps = [f for f in folders if (f / "sweep.md").is_file()]
    comparisons = [f for f in folders if (f / "compare.md").is_file()]
    suites = [f for f in folders if (f / "suite.md").is_file()]
    unknown = [str(f) for f in folders if f not in found + sweeps + comparisons + suites]
    if unknown:
        raise DataError("not a result folder (no metrics.json, sweep.md, compare.md or suite.md): "
                        f"{', '.join(unknown)}")
    runs = readable_runs(found)
    if not runs and not sweeps + comparisons + suites:
        raise DataError(f"nothing to report: every run folder is damaged (see the warnings): "
                        f"{', '.join(map(str, found))}")
    created = not out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create '{out}' ({e.strerror or e}); choose a writable folder") from None
    try:
        claim_output(out, "report", "--out")  # new, empty or an earlier report's: no file of anyone else's replaced
        return _write_report(folders, out, runs, sweeps + comparisons + suites)
    except BaseException:
        remove_unused(out, created)
        raise


def _write_report(folders: list[Path], out: Path, runs: dict[Path, tuple[dict, dict]],
                  tables: list[Path]) -> tuple[Path, Path]:
    """Write the pages (the pictures copied into ``<out>/images/``) of `runs` and the `tables`
    folders (sweeps, comparisons, suites), a table of contents first; returns their paths."""
    page = _Page()
    if runs:
        headers = ["run", "experiment", "data", "method", "mIoU", "mAcc", "aAcc", "images", *COST_HEADERS]
        table = [[run.name, str(cfg.get("experiment")), cfg["data"]["name"], run_method(cfg),
                  f"{m['mIoU']:.2f}", f"{m['mAcc']:.2f}", f"{m['aAcc']:.2f}", str(m["num_images"]),
                  *cost_cells(run_cost(m))] for run, (m, cfg) in runs.items()]
        page.heading(2, "Runs", "runs")
        page.md += markdown_table(headers, table, md_escape)
        page.body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        page.body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in table]
        page.body.append("</table>")
        for index, (run, (m, _)) in enumerate(runs.items()):
            page.heading(3, run.name, f"run-{index}")
            _run_section(page, run, m, out, _picture_dir(folders, run, out))
    for index, folder in enumerate(tables):
        file = next(name for name in TABLES if (folder / name).is_file())
        text = (folder / file).read_text()
        plots = [_copy(p, _picture_dir(folders, folder, out), out) for p in sorted(folder.glob("mIoU_vs_*.png"))]
        page.heading(2, folder.name, f"table-{index}")
        page.md += ["", text] + [_md_picture(link, stem) for link, stem in plots]
        page.body += [_markdown_tables_to_html(text)] + [_html_picture(link, stem) for link, stem in plots]
        for number, (group, members) in enumerate(_member_runs(folder, file).items()):
            page.heading(3, f"per-class IoU{f' on {group}' if group else ''}", f"table-{index}-{number}")
            _class_iou(page, members)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(page.markdown()) + "\n")
    atomic_write_text(html_path, html_page("\n".join(page.html())))
    return md_path, html_path


class _Page:
    """The report's Markdown lines and HTML parts as they are written, and its sections for the table of contents."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.body: list[str] = []
        self.sections: list[tuple[int, str, str]] = []  # (level, title, anchor)

    def heading(self, level: int, title: str, anchor: str) -> None:
        """A section (level 2) or subsection (3), with an anchor that the contents link to."""
        self.sections.append((level, title, anchor))
        self.md += ["", f'{"#" * level} <a id="{anchor}"></a>{md_escape(title)}', ""]
        self.body.append(f'<h{level} id="{anchor}">{html.escape(title)}</h{level}>')

    def markdown(self) -> list[str]:
        contents = [f"{'  ' * (level - 2)}- [{md_escape(title)}](#{anchor})" for level, title, anchor in self.sections]
        return [WRITTEN_BY, "# rim-bench report", "", "Contents:", "", *contents, *self.md]

    def html(self) -> list[str]:
        items = "".join(f'<li class="toc{level}"><a href="#{anchor}">{html.escape(title)}</a></li>'
                        for level, title, anchor in self.sections)
        return ["<h1>rim-bench report</h1>", f'<nav><p>Contents:</p><ul class="toc">{items}</ul></nav>', *self.body]


def run_method(cfg: dict) -> str:
    """What a run ran, from its config.yaml: its method file's name (``method``), else for a per-pixel
    run (``pipeline: pixel``) its pixel stage's own method (``pixel.clip.method``) or name, else its matcher."""
    if cfg.get("method"):
        return str(cfg["method"])
    pixel = cfg.get("pixel")
    if cfg.get("pipeline") == "pixel" and isinstance(pixel, dict):
        stage = pixel.get(pixel.get("name"))
        own = stage.get("method") if isinstance(stage, dict) else None
        return str(own or pixel.get("name") or "pixel")
    return str(cfg["matcher"]["name"])


def _run_section(page: _Page, run: Path, m: dict, out: Path, pictures: Path) -> None:
    _class_iou(page, {run.name: m})
    for overlay in sorted((run / "overlays").glob("*.png"))[:MAX_OVERLAYS]:
        link, stem = _copy(overlay, pictures, out)
        page.md.append(_md_picture(link, stem))
        page.body.append(_html_picture(link, stem))
    config = (run / "config.yaml").read_text()
    page.md += ["", "<details><summary>config</summary>", "", "```yaml", config, "```", "</details>", ""]
    page.body.append(f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>")


COLOURS = ("#4a7ab5", "#e08a2c", "#4c9a52", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")


def _class_iou(page: _Page, runs: dict[str, dict]) -> None:
    """Per-class IoU of one run or several (a comparison's methods, a suite's cells on one benchmark): a
    table in Markdown; bars in HTML, one per run in each class, a colour each (a legend when several)."""
    ious = {name: {k: v for k, v in m["per_class_iou"].items() if v is not None} for name, m in runs.items()}
    classes = list(dict.fromkeys(c for per_class in ious.values() for c in per_class))
    cells = [[c, *(f"{per_class[c]:.2f}" if c in per_class else "-" for per_class in ious.values())] for c in classes]
    page.md += markdown_table(["class", *(["IoU"] if len(runs) == 1 else list(runs))], cells, md_escape)
    colour = dict(zip(runs, itertools.cycle(COLOURS)))
    parts = []
    if len(runs) > 1:
        parts.append('<div class="legend">' + "".join(
            f'<span class="key" style="background:{colour[name]}"></span>{html.escape(name)} ' for name in runs)
            + "</div>")
    for c in classes:
        bars = "".join(f'<div class="bar"><span class="fill" style="width:{per_class[c]:.1f}%;background:'
                       f'{colour[name]}"></span><span class="value">{per_class[c]:.1f}</span></div>'
                       for name, per_class in ious.items() if c in per_class)
        parts.append(f'<div class="group"><span class="name">{html.escape(c)}</span><div>{bars}</div></div>')
    page.body.append(f'<div class="bars">{"".join(parts)}</div>')


def _member_runs(folder: Path, table: str) -> dict[str, dict[str, dict]]:
    """The finished runs inside a comparison (``<method>/``, one group "") or a suite (``<benchmark>/<method>/``,
    a group per benchmark), their metrics by run folder name; a sweep's points are left out, damaged runs too."""
    pattern = {"compare.md": "*/metrics.json", "suite.md": "*/*/metrics.json"}.get(table)
    if pattern is None:
        return {}
    groups: dict[str, dict[str, dict]] = {}
    for run, (metrics, _) in readable_runs([f.parent for f in sorted(folder.glob(pattern))]).items():
        groups.setdefault("" if table == "compare.md" else run.parent.name, {})[run.name] = metrics
    return groups


def readable_runs(folders: list[Path]) -> dict[Path, tuple[dict, dict]]:
    """Each run folder's metrics and config; a damaged folder is left out with a one-line warning."""
    runs = {}
    for run in folders:
        try:
            runs[run] = read_run(run)
        except DataError as e:
            warnings.warn(f"report: skipping '{run}': {e}", stacklevel=2)
    return runs


def read_run(run: Path) -> tuple[dict, dict]:
    """A run folder's metrics.json and config.yaml, checked for what the report shows.

    Raises:
        DataError: a file is missing, truncated or lacks a score, naming it.
    """
    metrics_file, config_file = run / "metrics.json", run / "config.yaml"
    try:
        metrics, config = json.loads(metrics_file.read_text()), yaml.safe_load(config_file.read_text())
    except FileNotFoundError as e:
        raise DataError(f"'{e.filename}' not found (the run did not finish)") from None
    except (OSError, ValueError, yaml.YAMLError) as e:  # truncated or not text: JSONDecodeError, UnicodeError
        raise DataError(f"cannot read {metrics_file} or {config_file} ({one_line(str(e))}): rerun it") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("per_class_iou"), dict) or not all(
            isinstance(metrics.get(k), (int, float)) for k in SCORES):
        raise DataError(f"{metrics_file} holds no scores ({', '.join(SCORES)}, per_class_iou): nothing was scored")
    for key in SCORES:
        if finite_number(metrics[key]) is None:  # NaN or infinity: no run writes one
            raise DataError(f"{metrics_file}: {key} is {metrics[key]}, not a score; rerun it")
    for name, iou in metrics["per_class_iou"].items():
        if iou is not None and finite_number(iou) is None:  # None: a class absent from the data
            raise DataError(f"{metrics_file}: the IoU of class '{name}' is {iou!r}, not a score; rerun it")
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("data", "matcher")):
        raise DataError(f"{config_file} is not a rim-bench run's config")
    for key in ("data", "matcher"):
        if not isinstance(config[key].get("name"), str):
            raise DataError(f"{config_file}: {key}.name is {config[key].get('name')!r}, not a name: not a rim-bench "
                            "run's config")
    return metrics, config


SCORES = ("mIoU", "mAcc", "aAcc", "num_images")


def _picture_dir(folders: list[Path], folder: Path, out: Path) -> Path:
    """Where a result folder's pictures are copied: ``<out>/images/<index>-<name>/`` (two
    folders may share a name)."""
    return out / "images" / f"{folders.index(folder):02d}-{safe_name(folder.name)}"


def _copy(picture: Path, folder: Path, out: Path) -> tuple[str, str]:
    """Copy `picture` into `folder`; its link relative to `out` and its stem (for alt text)."""
    target = file_in(folder, picture.stem, ".png")
    with atomic_path(target) as tmp:
        shutil.copyfile(picture, tmp)
    return target.relative_to(out).as_posix(), picture.stem


def _md_picture(link: str, stem: str) -> str:
    return f"![{html.escape(stem)}]({link})"  # the link is made of safe names


def _html_picture(link: str, stem: str) -> str:
    return f'<img src="{html.escape(link)}" alt="{html.escape(stem)}">'


def _markdown_tables_to_html(text: str) -> str:
    """The Markdown tables and headings of sweep.md / compare.md as HTML."""
    parts: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, *rest = rows
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c.strip('*'))}</td>" for c in r) + "</tr>" for r in rest)
                + "</table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif not line.startswith("|"):
            flush()
            if line.startswith("#"):
                parts.append(f"<h3>{html.escape(line.lstrip('#').strip())}</h3>")
    flush()
    return "\n".join(parts)
