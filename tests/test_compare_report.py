"""`rim-bench compare` and `rim-bench report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_folder

from rim_bench.commands.cli import main
from rim_bench.commands.compare import comparison_markdown, parse_methods, published
from rim_bench.commands.report import build_report
from rim_bench.core.errors import ConfigError


def test_compare_runs_methods_on_shared_caches_and_tables_them(tmp_path: Path):
    out = tmp_path / "cmp"
    assert main(["compare", "experiment=smoke", "methods=[rim,cosine]", "data.max_images=3",
                 f"output_dir={out}"]) == 0
    table = (out / "compare.md").read_text()
    assert "| rim |" in table and "| cosine |" in table and "Published" not in table  # smoke: nothing published
    measured = json.loads((out / "compare.json").read_text())["measured"]
    assert [r["method"] for r in measured] == ["rim", "cosine"] and measured[0]["mIoU"] != measured[1]["mIoU"]
    assert "| images/s | peak RSS (MB) |" in table
    assert all(r["seconds"] > 0 and r["images_per_second"] > 0 and r["peak_rss_mb"] > 0 for r in measured)
    assert "name: cosine" in (out / "cosine" / "config.yaml").read_text()


def test_published_numbers_stay_in_their_own_labelled_block():
    reported = published("voc21")
    assert {"RIM", "SCLIP", "FreeDA"} <= {r["method"] for r in reported}
    assert next(r for r in reported if r["method"] == "RIM")["mIoU"] == 77.8
    text = comparison_markdown([{"method": "rim", "mIoU": 50.0, "mAcc": 60.0, "aAcc": 70.0, "num_images": 3}],
                               "voc21", reported)
    measured, _, published_block = text.partition("## Published (not measured here")
    assert "77.8" not in measured and "77.8" in published_block and "50.00" in measured


@pytest.mark.parametrize("overrides, fragment", [
    (["methods=[rim,nope]"], "unknown method 'nope'"),
    (["experiment=smoke"], "give methods="),
    (["methods=[]"], "expected a list"),
])
def test_compare_bad_input(overrides: list[str], fragment: str):
    with pytest.raises(ConfigError, match=fragment):
        parse_methods(overrides)


def test_report_pages_link_runs_sweeps_and_comparisons(tmp_path: Path):
    run = tmp_path / "run"
    assert main(["test", "experiment=smoke", "data.max_images=2", "save_overlays=1", f"output_dir={run}"]) == 0
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("parameters:\n  matcher.rim.temperature: [0.05, 0.2]\n")
    assert main(["sweep", "experiment=smoke", f"sweep={sweep_file}", "data.max_images=2",
                 f"output_dir={tmp_path / 'sweep'}"]) == 0
    assert main(["report", str(run), str(tmp_path / "sweep"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "| run | smoke | smoke | rim |" in md and "images/00-run/smoke_0000.png" in md
    assert "| images/s | peak RSS (MB) | peak CUDA (MB) |" in md and "<th>peak RSS (MB)</th>" in page
    assert "mIoU_vs_matcher.rim.temperature.png" in page and 'class="fill"' in page and "<pre>" in page
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "rep")]) == 2


def _linked_sections(text: str, link: str, anchor: str) -> tuple[list[str], set[str]]:
    return re.findall(link, text), set(re.findall(anchor, text))


def test_report_has_contents_and_per_class_bars_for_comparisons_and_suites(tmp_path: Path):
    """A table of contents links every section (Markdown and HTML); a comparison's methods and a
    suite's cells on each benchmark get per-class IoU side by side, as a single run does."""
    run = run_folder(tmp_path / "single")
    comparison = tmp_path / "cmp"
    comparison.mkdir()
    (comparison / "compare.md").write_text("## Measured by rim-bench on smoke\n\n| method | mIoU |\n|---|---|\n")
    run_folder(comparison / "rim", classes=("sky", "leaf"))
    run_folder(comparison / "cosine", classes=("sky", "leaf", "sea"))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "suite.md").write_text("# Suite s\n\n| method | a | b |\n|---|---|---|\n")
    for benchmark in ("a", "b"):
        for method in ("rim", "random"):
            run_folder(suite / benchmark / method, classes=(f"{benchmark}-cls",))
    run_folder(suite / "a" / "sweep-t-rim" / "point-000-x")  # a sweep's points are not cells
    md_file, html_file = build_report([run, comparison, suite], tmp_path / "rep")
    md, page = md_file.read_text(), html_file.read_text()

    links, anchors = _linked_sections(md, r"\]\(#([\w-]+)\)", r'<a id="([\w-]+)"></a>')
    assert len(links) == len(anchors) == 1 + 1 + 3 + 2 and set(links) == anchors  # runs, a run, 2 tables + 3
    assert md.index("Contents:") < md.index('<a id="runs">')
    html_links, ids = _linked_sections(page, r'href="#([\w-]+)"', r' id="([\w-]+)"')
    assert html_links == links and ids == anchors
    assert "  - [per-class IoU on a](#table-1-0)" in md and "  - [single](#run-0)" in md

    assert "| class | cosine | rim |" in md  # a comparison's methods in folder name order
    assert "| sea | 42.00 | - |" in md  # a class one method lacks
    assert md.count("| class | random | rim |") == 2  # one per benchmark of the suite
    assert page.count('class="legend"') == 3 and page.count("<span class=\"key\"") == 6
    assert "point-000-x" not in md


def test_report_runs_table_names_each_runs_method(tmp_path: Path):
    region = run_folder(tmp_path / "region")
    peer = run_folder(tmp_path / "peer")
    (peer / "config.yaml").write_text("experiment: smoke\nmethod: sclip\npipeline: pixel\ndata: {name: smoke}\n"
                                      "matcher: {name: rim}\npixel: {name: clip, clip: {method: sclip}}\n")
    bare = run_folder(tmp_path / "bare")  # a per-pixel run without a method file
    (bare / "config.yaml").write_text("experiment: smoke\npipeline: pixel\ndata: {name: smoke}\n"
                                      "matcher: {name: rim}\npixel: {name: clip, clip: {method: naclip}}\n")
    md = build_report([region, peer, bare], tmp_path / "rep")[0].read_text()
    assert "| run | experiment | data | method | mIoU |" in md
    assert "| region | smoke | smoke | rim |" in md and "| peer | smoke | smoke | sclip |" in md
    assert "| bare | smoke | smoke | naclip |" in md


def test_quiet_compare_with_wandb_prints_a_line_per_method_and_the_table(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # the tests' default: --quiet must silence W&B itself
    out = tmp_path / "cmp"
    assert main(["compare", "--quiet", "experiment=smoke", "methods=[rim,cosine]", "data.max_images=2",
                 "logger=wandb", f"output_dir={out}"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert "wandb" not in (captured.out + captured.err).lower().replace(str(tmp_path).lower(), "")
    assert [line.split(": mIoU ")[0] for line in lines[:2]] == ["rim", "cosine"]
    table = [line for line in (out / "compare.md").read_text().splitlines() if line.strip()]
    assert lines[2:] == [*table, f"comparison: {out}/compare.md"]
    assert list(out.glob("*/wandb/offline-run-*"))  # W&B still logged, offline
