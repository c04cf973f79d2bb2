"""`rim-bench suite`: benchmarks x methods, resumed, tabled beside the published numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import rim_bench.run.runner
from rim_bench.commands.cli import main
from rim_bench.commands.suite import SUITE_DIR, load_suite, plan_cells
from rim_bench.core.config import load_config
from rim_bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _csv(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "suite.csv", newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def _assert_tables_equal_cells(folder: Path, benchmarks: list[str], methods: list[str]) -> None:
    """suite.csv, suite.md and suite.json hold exactly the cells' own metrics.json numbers."""
    table, md = _csv(folder), (folder / "suite.md").read_text()
    cells = {(c["benchmark"], c["method"]): c for c in json.loads((folder / "suite.json").read_text())["cells"]}
    assert sorted(table) == sorted(methods)
    for method in methods:
        mious = []
        for benchmark in benchmarks:
            metrics = json.loads((folder / benchmark / method / "metrics.json").read_text())
            mious.append(metrics["mIoU"])
            assert float(table[method][benchmark]) == metrics["mIoU"]
            assert cells[benchmark, method]["mIoU"] == metrics["mIoU"]
            assert cells[benchmark, method]["num_images"] == metrics["num_images"]
        assert float(table[method]["mean"]) == pytest.approx(sum(mious) / len(mious), abs=1e-4)
        assert f"| {method} | " + " | ".join(f"{v:.2f}" for v in mious) in md


def _counting_runs(monkeypatch) -> list[str]:
    """Record every test run a suite starts (the real run goes on)."""
    runs, real = [], rim_bench.run.runner.run_test

    def counted(cfg, label=None):
        runs.append(cfg.output_dir)
        return real(cfg, label)

    monkeypatch.setattr(rim_bench.run.runner, "run_test", counted)
    return runs


def test_smoke_suite_runs_writes_the_table_and_resumes_without_rerunning(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default folder goes under ./outputs
    runs = _counting_runs(monkeypatch)
    args = ["suite", "smoke", "data.max_images=3"]  # the shipped suite on fewer images: the fast tier
    assert main(args) == 0
    (folder,) = (tmp_path / "outputs").iterdir()
    assert folder.name.startswith("suite-smoke-") and len(runs) == 8
    _assert_tables_equal_cells(folder, ["smoke", "tiny"], ["rim", "cosine", "prototype", "random"])
    page = (folder / "suite.html").read_text()
    assert "<th>tiny</th>" in page and "Published" not in page  # nothing published on the smoke data
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.json")}
    assert len(stamps) == 8
    assert main(["report", str(folder), "--out", str(tmp_path / "report")]) == 0  # report reads suite folders
    assert "<h3>Suite smoke</h3>" in (tmp_path / "report" / "report.html").read_text()

    # The same command again: the same folder, every cell read back, none run.
    capsys.readouterr()
    runs.clear()
    assert main(args) == 0
    assert list((tmp_path / "outputs").iterdir()) == [folder] and runs == []
    assert capsys.readouterr().out.count("done before") == 8
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.json")} == stamps
    _assert_tables_equal_cells(folder, ["smoke", "tiny"], ["rim", "cosine", "prototype", "random"])


def test_the_default_folder_is_named_by_what_the_cells_compute():
    spec = load_suite("smoke")

    def folder(*overrides: str) -> Path:
        return plan_cells(spec, list(overrides))[2]

    base = folder()
    assert base.name.startswith("suite-smoke-") and base.parent == Path("outputs") and folder() == base
    # Loggers, devices and workers change no result: a rerun with them resumes in the same folder.
    assert folder("logger=wandb", "trainer.devices=2", "data.num_workers=4") == base
    assert folder("matcher.rim.temperature=0.1") != base
    assert folder("output_dir=somewhere") == Path("somewhere")


# Models that need no file, so that the data alone is missing (the weights are checked first).
NO_WEIGHTS = ["proposer.sam.model_type=tiny", "featurizer.dinov2.model=tiny", "featurizer.clip.model=tiny",
              "references.diffusion.model=tiny"]


def test_missing_weights_stop_the_suite_before_its_data(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(rim_bench.run.runner, "run_test", lambda cfg, label=None: pytest.fail("a cell ran"))
    code = main(["suite", "rim_benchmarks", "data.root=MISSING", f"proposer.sam.checkpoint={tmp_path / 'sam.pth'}",
                 *NO_WEIGHTS[1:], f"output_dir={tmp_path / 'table1'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "proposer.sam.checkpoint: SAM checkpoint" in err[0] and "MISSING" not in err[0]
    assert not (tmp_path / "table1").exists()


def test_missing_data_is_one_line_per_benchmark_before_any_model(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(rim_bench.run.runner, "run_test",
                        lambda cfg, label=None: pytest.fail("a cell ran without its data"))
    out = tmp_path / "table1"
    assert main(["suite", "rim_benchmarks", "data.root=MISSING", *NO_WEIGHTS, f"output_dir={out}"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "does not exist" in line and not line[0].isdigit()]
    assert [line.split(":")[0] for line in lines] == ["voc21", "context60", "coco_object"]
    assert all("data root 'MISSING' does not exist" in line for line in lines)
    assert captured.err.strip().splitlines() == ["rim-bench: error: 18 of 18 cells failed (reasons in the table above)"]
    # The table says so: every cell failed, one footnote per benchmark, published numbers apart.
    md = (out / "suite.md").read_text()
    measured, _, published = md.partition("## Published (not measured here")
    assert "| rim | failed (1) | failed (2) | failed (3) | - |" in measured
    assert "1. voc21 / rim, cosine, prototype, random, clip_text, clip_dense: data root 'MISSING'" in measured
    assert "77.8" not in measured and "| RIM | 77.8 | 34.3 | 44.5 | 52.2 |" in published
    assert all(row["voc21"] == row["mean"] == "" and "MISSING" in row["failed"] for row in _csv(out).values())
    # Sweeps on a benchmark without data fail with it, and are counted apart.
    assert main(["suite", "rim_tau_subcategories", "data.root=MISSING", *NO_WEIGHTS,
                 f"output_dir={tmp_path / 'tau'}"]) == 1
    assert "2 of 2 cells and 2 of 2 sweeps failed" in capsys.readouterr().err
    assert "| voc21 | rim | tau_subcategories | - | failed (1) | - |" in (tmp_path / "tau" / "suite.md").read_text()


def _suite_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return str(path)


def test_a_failed_cell_is_footnoted_and_the_others_still_run(tmp_path: Path, monkeypatch, capsys):
    # One benchmark's data is missing (a hostile name: it must come out escaped), and one cell crashes.
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"extends: [smoke]\ndata:\n  name: voc21\n  root: '{tmp_path}/<b>none</b>'\n")
    suite = _suite_file(tmp_path, f"benchmarks: {{smoke: smoke, broken: '{broken}'}}\nmethods: [rim, cosine, random]\n"
                                  "overrides: [data.max_images=2]\n")
    real = rim_bench.run.runner.run_test

    def crash_cosine(cfg, label=None):
        if cfg.matcher.name == "cosine":
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return real(cfg, label)

    monkeypatch.setattr(rim_bench.run.runner, "run_test", crash_cosine)
    out = tmp_path / "out"
    assert main(["suite", suite, f"output_dir={out}"]) == 1
    assert "4 of 6 cells failed" in capsys.readouterr().err
    table = _csv(out)
    assert float(table["rim"]["smoke"]) == json.loads((out / "smoke/rim/metrics.json").read_text())["mIoU"]
    assert table["rim"]["broken"] == "" and table["rim"]["mean"] == "" and "does not exist" in table["rim"]["failed"]
    assert table["cosine"]["smoke"] == "" and "RuntimeError: CUDA out of memory." in table["cosine"]["failed"]
    assert "CUDA out of memory" in (out / "smoke/cosine/error.txt").read_text()  # the whole traceback
    md = (out / "suite.md").read_text()
    assert "| rim | " in md and "| cosine | failed (1) | failed (2) | - |" in md
    page = (out / "suite.html").read_text()
    assert "&lt;b&gt;none&lt;/b&gt;" in page and "<b>" not in page


def test_sweeps_in_a_suite_and_one_wandb_group_with_a_summary_table(tmp_path: Path):
    sweep = tmp_path / "temperature.yaml"
    sweep.write_text("parameters:\n  matcher.rim.temperature: [0.05, 0.2]\n")
    suite = _suite_file(tmp_path, f"benchmarks: [smoke]\nmethods: [rim, random]\nsweeps: ['{sweep}']\n"
                                  "overrides: [data.max_images=2]\n")
    out = tmp_path / "out"
    assert main(["suite", suite, f"output_dir={out}", "logger=wandb"]) == 0
    sweep_dir = out / "smoke" / "sweep-temperature-rim"
    assert len(list(sweep_dir.glob("point-*/metrics.json"))) == 2
    best = max(json.loads(p.read_text())["mIoU"] for p in sweep_dir.glob("point-*/metrics.json"))
    md = (out / "suite.md").read_text()
    assert f"| smoke | rim | temperature | 2 | {best:.2f} |" in md
    assert 'src="smoke/sweep-temperature-rim/mIoU_vs_matcher.rim.temperature.png"' in (out / "suite.html").read_text()
    # W&B: every cell and sweep point in the suite's group, and a summary run with the table.
    configs = [yaml.safe_load(p.read_text()) for p in out.glob("smoke/**/config.yaml")]
    assert len(configs) == 6 and {c["wandb"]["group"] for c in configs} == {"out"}
    (summary,) = (out / "wandb").glob("offline-run-*")
    assert list(summary.glob("files/media/table/suite_*.table.json"))
    table = json.loads(next(summary.glob("files/media/table/suite_*.table.json")).read_text())
    assert table["columns"][:2] == ["benchmark", "method"] and len(table["data"]) == 2


@pytest.mark.parametrize("text, fragment", [
    ("benchmarks: [smoke]\nmethods: [rim]\nmetods: [x]\n", "expected a mapping of benchmarks"),
    ("benchmarks: []\nmethods: [rim]\n", "'benchmarks' must be"),
    ("benchmarks: [smoke]\nmethods: [nope]\n", "unknown method 'nope'"),
    ("benchmarks: {'../up': smoke}\nmethods: [rim]\n", "cannot name a folder"),
    ("benchmarks: [smoke]\nmethods: [rim]\noverrides: [experiment=tiny]\n", "drop experiment="),
    ("benchmarks: [smoke]\nmethods: [rim]\nsweeps: [nope]\n", "sweep 'nope' not found"),
    ("benchmarks: [smoke]\nmethods: [rim\n", "not valid YAML"),
])
def test_bad_suite_files(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(ConfigError, match=fragment):
        load_suite(_suite_file(tmp_path, text))


def test_a_typo_fails_before_any_cell_runs(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(rim_bench.run.runner, "run_test",
                        lambda cfg, label=None: pytest.fail("ran before the configs were checked"))
    assert main(["suite", "smoke", "matcher.rim.temprature=0.1", f"output_dir={tmp_path}"]) == 2
    assert "unknown config key 'matcher.rim.temprature'" in capsys.readouterr().err
    assert main(["suite", "nope"]) == 2
    assert main(["suite", "smoke", "experiment=tiny"]) == 2


def test_shipped_suites_load_with_every_cell_config():
    names = sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))
    assert {"smoke", "rim_benchmarks", "rim_tau_subcategories", "peers"} <= set(names)
    for name in names:
        spec = load_suite(name)
        for experiment in spec.benchmarks.values():
            for method in spec.methods:
                load_config([f"experiment={experiment}", *spec.overrides, f"method={method}"])
    table1 = load_suite("rim_benchmarks")
    assert {load_config([f"experiment={e}"]).data.name for e in table1.benchmarks.values()} == \
        {"voc21", "context60", "coco_object"}
    assert [s.name for s in load_suite("rim_tau_subcategories").sweeps] == ["tau_subcategories"]
    peers = load_suite("peers")
    assert peers.methods == ["maskclip", "sclip", "naclip", "clearclip"] and len(peers.benchmarks) == 8
    cfg = load_config(["experiment=voc21", *peers.overrides, "method=sclip"])
    assert (cfg.pixel.clip.method, cfg.pixel.clip.logit_scale, cfg.pixel.clip.area_thd) == ("sclip", 65, 0.1)


def test_published_numbers_are_read_tolerantly_with_their_protocols(tmp_path: Path, monkeypatch):
    from rim_bench.commands import compare

    path = tmp_path / "published.yaml"
    path.write_text("""
protocols:
  sclip: {short_side: 336, window: 224, background: 0.1}
methods:
  A: {source: "paper A", protocol: sclip, miou: {voc21: 50.0, context60: null}}
  B: {source: "paper B", protocol: {voc21: "448 px, whole image"},
      miou: {voc21: {miou: 60.0, source: "paper B, Tab. 2"}}}
  C: {source: "paper C", miou: {coco_object: 30.0}, extra_field: ignored}
""")
    monkeypatch.setattr(compare, "PUBLISHED", path)
    numbers = {n["method"]: n for n in compare.published_numbers()}
    assert numbers["A"] == {"method": "A", "benchmark": "voc21", "mIoU": 50.0, "source": "paper A",
                            "protocol": "sclip: short_side=336, window=224, background=0.1"}
    assert numbers["B"]["source"] == "paper B, Tab. 2" and numbers["B"]["protocol"] == "448 px, whole image"
    assert numbers["C"]["protocol"] == "" and len(compare.published("voc21")) == 2


@pytest.mark.slow
def test_the_full_smoke_suite_from_the_command_line_twice(tmp_path: Path):
    # As a new user: `rim-bench suite smoke`, then again; the second run reruns no cell.
    def run() -> str:
        result = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "suite", "smoke"], cwd=tmp_path,
                                check=False, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    first = run()
    (folder,) = (tmp_path / "outputs").iterdir()
    _assert_tables_equal_cells(folder, ["smoke", "tiny"], ["rim", "cosine", "prototype", "random"])
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.json")}
    second = run()
    assert first.count("time breakdown") == 8 and first.count("done before") == 0
    assert second.count("time breakdown") == 0 and second.count("done before") == 8
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.json")} == stamps


@pytest.mark.slow
def test_a_suite_under_ddp_equals_one_process(tmp_path: Path):
    # Lightning starts the second process by rerunning the command: it skips finished cells,
    # joins the running one, and writes no table of its own.
    suite = _suite_file(tmp_path, "benchmarks: [smoke]\nmethods: [rim, random]\noverrides: [data.max_images=5]\n")

    def run(out: Path, *extra: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "rim_bench.commands.cli", "suite", suite,
                                 "trainer.accelerator=cpu",
                                 f"output_dir={out}", *extra], check=False, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("# Suite suite") == 1  # the spawned rank shares stdout and prints no table
        return _csv(out)

    one = run(tmp_path / "one")
    two = run(tmp_path / "two", "trainer.devices=2", "trainer.strategy=ddp")
    assert one == two
    for method in ("rim", "random"):
        assert json.loads((tmp_path / "two" / "smoke" / method / "metrics.json").read_text())["num_images"] == 5


def test_quiet_suite_prints_a_line_per_cell_and_the_table(tmp_path: Path, capsys):
    suite = _suite_file(tmp_path, "benchmarks: {smoke: smoke}\nmethods: [rim, cosine]\n"
                                  "overrides: [data.max_images=2]\n")
    assert main(["suite", "--quiet", suite, f"output_dir={tmp_path / 'out'}"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert captured.err == "" and [line.split(": mIoU ")[0] for line in lines[:2]] == \
        ["[1/2] smoke / rim", "[2/2] smoke / cosine"]
    table = [line for line in (tmp_path / "out" / "suite.md").read_text().splitlines() if line.strip()]
    assert lines[2:] == [*table, f"suite: {tmp_path / 'out'}/suite.md, suite.csv, suite.html"]
