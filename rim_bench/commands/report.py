"""`rim-bench report RUN_DIR... [--out DIR]`: result folders → one Markdown and one HTML page.

A folder with ``metrics.json`` is a run (its summary, per-class IoU as bars, its config
and overlays); one with ``sweep.md`` a sweep (its table and plots); one with
``compare.md`` or ``suite.md`` a comparison or a suite (its tables, published numbers kept
apart). The pictures are copied into ``<out>/images/``, so the report folder can be moved or
shared alone. Every string from results (run and class names, ids, configs) is HTML-escaped.
``--out`` must be new, empty, or an earlier report's folder (`claim_output`): a file rim-bench
did not write is never replaced; a report that fails takes back the folder it made.
"""

from __future__ import annotations

import html
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
    folders (sweeps, comparisons, suites); returns their paths."""
    md, body = [WRITTEN_BY, "# rim-bench report", ""], ["<h1>rim-bench report</h1>"]
    if runs:
        headers = ["run", "experiment", "data", "matcher", "mIoU", "mAcc", "aAcc", "images", *COST_HEADERS]
        table = [[run.name, str(cfg.get("experiment")), cfg["data"]["name"], cfg["matcher"]["name"],
                  f"{m['mIoU']:.2f}", f"{m['mAcc']:.2f}", f"{m['aAcc']:.2f}", str(m["num_images"]),
                  *cost_cells(run_cost(m))] for run, (m, cfg) in runs.items()]
        md += ["## Runs", "", *markdown_table(headers, table, md_escape)]
        body.append("<h2>Runs</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in table]
        body.append("</table>")
        for run, (m, _) in runs.items():
            md_run, html_run = _run_section(run, m, out, _picture_dir(folders, run, out))
            md += md_run
            body += html_run
    for folder in tables:
        file = next(name for name in TABLES if (folder / name).is_file())
        text = (folder / file).read_text()
        plots = [_copy(p, _picture_dir(folders, folder, out), out) for p in sorted(folder.glob("mIoU_vs_*.png"))]
        md += [f"## {folder.name}", "", text] + [_md_picture(link, stem) for link, stem in plots]
        body += [f"<h2>{html.escape(folder.name)}</h2>", _markdown_tables_to_html(text)]
        body += [_html_picture(link, stem) for link, stem in plots]
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    atomic_write_text(html_path, html_page("\n".join(body)))
    return md_path, html_path


def _run_section(run: Path, m: dict, out: Path, pictures: Path) -> tuple[list[str], list[str]]:
    ious = {k: v for k, v in m["per_class_iou"].items() if v is not None}
    table = markdown_table(["class", "IoU"], [[k, f"{v:.2f}"] for k, v in ious.items()], md_escape)
    md = [f"### {md_escape(run.name)}", "", *table]
    bars = "".join(
        f'<div class="bar"><span class="name">{html.escape(k)}</span>'
        f'<span class="fill" style="width:{v:.1f}%"></span><span class="value">{v:.1f}</span></div>'
        for k, v in ious.items())
    body = [f"<h3>{html.escape(run.name)}</h3>", f'<div class="bars">{bars}</div>']
    for overlay in sorted((run / "overlays").glob("*.png"))[:MAX_OVERLAYS]:
        link, stem = _copy(overlay, pictures, out)
        md.append(_md_picture(link, stem))
        body.append(_html_picture(link, stem))
    config = (run / "config.yaml").read_text()
    md += ["", "<details><summary>config</summary>", "", "```yaml", config, "```", "</details>", ""]
    body.append(f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>")
    return md, body


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
