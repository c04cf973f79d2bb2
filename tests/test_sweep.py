"""`rim-bench sweep`: expansion, bad sweep files, cache reuse, resume, tables and plots."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from rim_bench.commands.cli import main
from rim_bench.commands.sweep import SweepSpec, expand, load_sweep, split_values, sweep_from_command_line
from rim_bench.core.config import as_overrides
from rim_bench.core.errors import ConfigError
from rim_bench.stages.references import diffusion


def test_grid_expands_every_combination_in_file_order():
    spec = SweepSpec("s", "grid", {"a": [1, 2, 3], "b": ["x", "y"]})
    points = expand(spec)
    assert len(points) == 6 and points[0] == {"a": 1, "b": "x"} and points[1] == {"a": 1, "b": "y"}


def test_random_sample_is_seeded_and_distinct():
    spec = SweepSpec("s", "random", {"a": list(range(10)), "b": list(range(10))}, num_samples=7, seed=3)
    points = expand(spec)
    assert points == expand(spec) and len({tuple(p.values()) for p in points}) == 7
    assert expand(SweepSpec("s", "random", spec.parameters, 7, seed=4)) != points


def test_overrides_keep_yaml_types():
    assert as_overrides({"a.b": 0.5, "c": None, "d": "kl", "e": [16, 8]}) == ["a.b=0.5", "c=null", "d=kl", "e=[16, 8]"]


def test_shipped_tau_subcategories_sweep_is_the_papers_grid():
    spec = load_sweep("tau_subcategories")
    assert spec.parameters["references.diffusion.n_subcategories"] == [1, 2, 4, 6, 8, 10]
    assert len(expand(spec)) == 30


@pytest.mark.parametrize("text, fragment", [
    ("method: grid\nparameters: {}\n", "the grid is empty"),
    ("method: grid\nparameters:\n  a: []\n", "the grid is empty"),
    ("method: bayes\nparameters:\n  a: [1]\n", "method 'bayes' unknown"),
    ("method: random\nparameters:\n  a: [1]\n", "needs num_samples"),
    ("method: random\nnum_samples: -2\nparameters:\n  a: [1]\n", "positive integer"),
    ("- a\n- b\n", "expected a mapping"),
    ("parameters: [a, b]\n", "the grid is empty"),
    ("parameters: {a: [1\n", "not valid YAML"),
])
def test_bad_sweep_files(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_sweep(str(path))


@pytest.mark.parametrize("value, items", [
    ("0.05,0.1", ["0.05", "0.1"]), ("kl", ["kl"]), ("[16,32],[8]", ["[16,32]", "[8]"]), ("[16,32]", ["[16,32]"]),
    ("'a,b',c", ["'a,b'", "c"]), ("{x: 1, y: 2},null", ["{x: 1, y: 2}", "null"]),
])
def test_command_line_values_split_at_commas_outside_brackets_and_quotes(value: str, items: list[str]):
    assert split_values(value) == items


def test_command_line_sweep_alone_or_beside_a_sweep_file():
    plain, spec = sweep_from_command_line(["experiment=smoke", "matcher.rim.temperature=0.05,1e-1",
                                           "references.diffusion.attention_resolutions=[16,32],[8]", "seed=1"])
    assert plain == ["experiment=smoke", "seed=1"] and spec.method == "grid" and spec.path == "command line"
    assert spec.parameters == {"matcher.rim.temperature": [0.05, 0.1],
                               "references.diffusion.attention_resolutions": [[16, 32], [8]]}
    _, spec = sweep_from_command_line(["sweep=rim_matching", "matcher.rim.ref_temperature=null,0.1"])
    assert list(spec.parameters) == ["matcher.rim.temperature", "matcher.rim.divergence",
                                     "matcher.rim.ref_temperature"] and len(expand(spec)) == 24
    with pytest.raises(ConfigError, match="also swept in"):
        sweep_from_command_line(["sweep=rim_matching", "matcher.rim.divergence=kl,js"])
    with pytest.raises(ConfigError, match="empty value"):
        sweep_from_command_line(["matcher.rim.temperature=0.05,"])
    with pytest.raises(ConfigError, match="or values to sweep on the command line as key=a,b,c"):
        sweep_from_command_line(["experiment=smoke"])


def test_command_line_sweep_on_smoke(tmp_path: Path):
    """Two points, as Hydra's multirun is typed: one per temperature, in one table."""
    out = tmp_path / "out"
    assert main(["sweep", "experiment=smoke", "matcher.rim.temperature=0.05,0.1", "data.max_images=3",
                 f"output_dir={out}"]) == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["matcher.rim.temperature"] for r in rows] == ["0.05", "0.1"]
    assert rows[0]["mIoU"] != rows[1]["mIoU"] and (out / "mIoU_vs_matcher.rim.temperature.png").is_file()


def test_every_points_weights_are_checked_before_the_first_runs(tmp_path: Path, capsys):
    assert main(["sweep", "experiment=smoke", "proposer.name=superpixels,sam", "proposer.sam.model_type=vit_b",
                 f"proposer.sam.checkpoint={tmp_path / 'sam.pth'}", f"output_dir={tmp_path / 'out'}"]) == 2
    assert "proposer.sam.checkpoint: SAM checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_key_that_does_not_exist_fails_before_any_point_runs(tmp_path: Path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("parameters:\n  matcher.rim.temprature: [0.1, 0.2]\n")
    assert main(["sweep", "experiment=smoke", f"sweep={path}", f"output_dir={tmp_path / 'out'}"]) == 2
    assert "unknown config key 'matcher.rim.temprature'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweep_reuses_regions_resumes_and_writes_tables_and_plots(tmp_path: Path, monkeypatch):
    from rim_bench.stages.proposals.superpixels import SuperpixelProposer

    calls = []
    real = SuperpixelProposer.__call__
    monkeypatch.setattr(SuperpixelProposer, "__call__", lambda self, image: calls.append(1) or real(self, image))
    path = tmp_path / "s.yaml"
    path.write_text("parameters:\n  matcher.rim.temperature: [0.05, 0.2]\n  matcher.rim.divergence: [kl, js]\n")
    args = ["sweep", "experiment=smoke", f"sweep={path}", "data.max_images=3", f"cache_dir={tmp_path / 'cache'}",
            f"output_dir={tmp_path / 'out'}"]
    assert main(args) == 0
    assert len(calls) == 3  # 4 points, 3 images: proposals once per image for the whole sweep
    with open(tmp_path / "out" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["matcher.rim.temperature"], r["matcher.rim.divergence"]) for r in rows] == \
        [("0.05", "kl"), ("0.05", "js"), ("0.2", "kl"), ("0.2", "js")]
    assert len({r["mIoU"] for r in rows}) > 1  # the points really differ
    assert (tmp_path / "out" / "sweep.md").read_text().count("\n") == 6
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"mIoU_vs_matcher.rim.temperature.png",
                                                                 "mIoU_vs_matcher.rim.divergence.png"}
    # Resume: nothing runs again.
    import rim_bench.run.runner

    monkeypatch.setattr(rim_bench.run.runner, "run_test",
                        lambda cfg, label=None: pytest.fail("a finished point ran again"))
    assert main(args) == 0


def test_tau_by_subcategory_sweep_generates_each_image_once(tmp_path: Path, monkeypatch):
    generated = []
    real = diffusion.generate_with_attention
    monkeypatch.setattr(diffusion, "generate_with_attention",
                        lambda pipe, prompt, *a, **k: generated.append(prompt) or real(pipe, prompt, *a, **k))
    subs = tmp_path / "subs.yaml"
    subs.write_text("".join(f"{c}: [{c}, {c} two]\n" for c in ("background", "sun", "leaf", "sea", "berry", "grape")))
    path = tmp_path / "s.yaml"
    path.write_text("parameters:\n  references.diffusion.attn_threshold: [0.3, 0.5]\n"
                    "  references.diffusion.n_subcategories: [2, 1]\n")
    assert main(["sweep", "experiment=smoke", f"sweep={path}", "data.max_images=2", f"cache_dir={tmp_path / 'c'}",
                 f"output_dir={tmp_path / 'out'}", "references.name=diffusion", "references.diffusion.model=tiny",
                 f"references.diffusion.subcategories={subs}", "references.diffusion.image_size=64",
                 "references.diffusion.num_inference_steps=2", "references.diffusion.mask=attention",
                 "references.diffusion.contact_sheets=false"]) == 0
    # 6 classes x 2 subcategories x 2 images, once: another tau thresholds the stored attention
    # maps again, and the 1-subcategory bank is a subset of the 2-subcategory one.
    assert len(generated) == 24
    assert len(list((tmp_path / "c" / "banks").iterdir())) == 4  # one bank per point


def test_wandb_sweep_definitions_name_real_keys_and_call_rim_bench():
    import yaml

    from rim_bench.core.config import load_config

    for path in (Path(__file__).parent.parent / "experiments" / "sweeps").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        command = spec["command"]
        assert command[:2] == ["rim-bench", "test"] and command[-1] == "${args_no_hyphens}", path
        fixed = [c for c in command[2:-1] if "=" in c]
        # W&B's ${args_no_hyphens} expands to key=value, which our config layering takes as it is.
        points = [f"{k}={v['values'][0]}" for k, v in spec["parameters"].items()]
        cfg = load_config([*fixed, *points])
        assert cfg.logger == "wandb" and cfg.experiment


def test_sweep_points_are_wandb_runs_in_one_group(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("parameters:\n  matcher.rim.temperature: [0.05, 0.2]\n")
    assert main(["sweep", "experiment=smoke", f"sweep={path}", "data.max_images=2", "logger=wandb",
                 f"output_dir={tmp_path / 'out'}"]) == 0
    runs = sorted((tmp_path / "out").glob("point-*/wandb/offline-run-*"))
    assert len(runs) == 2 and all(list(r.glob("*.wandb")) for r in runs)
    import yaml

    configs = [yaml.safe_load((r.parent.parent / "config.yaml").read_text()) for r in runs]
    assert {c["wandb"]["group"] for c in configs} == {"out"}  # one group, named after the sweep folder
    # The summary run holds the plots as images and the table.
    (summary,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    images = sorted(p.name for p in summary.glob("files/media/images/plots/*.png"))
    assert [name.split("_")[0:3] for name in images] == [["mIoU", "vs", "matcher.rim.temperature"]]
    assert list(summary.glob("files/media/table/*.table.json")) and list(summary.glob("*.wandb"))


def test_a_finished_point_with_other_settings_runs_again(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("parameters:\n  matcher.rim.temperature: [0.05]\n")
    args = ["sweep", "experiment=smoke", f"sweep={path}", "data.max_images=2", f"output_dir={tmp_path / 'out'}"]
    assert main(args) == 0
    rim = (tmp_path / "out" / "sweep.csv").read_text()
    assert main([*args, "matcher.name=random"]) == 0  # same point folder, other base config: not reused
    assert (tmp_path / "out" / "sweep.csv").read_text() != rim


def test_quiet_keeps_one_line_per_point_and_the_final_table(tmp_path: Path, capsys):
    """A 4-point sweep prints each point's tables (a per-class table, a time table) and ends with
    its own table; --quiet keeps one line per point and that table (the best mIoU in bold)."""
    args = ["sweep", "experiment=smoke", "matcher.rim.temperature=0.05,0.2", "matcher.rim.divergence=kl,js",
            "data.max_images=2", f"cache_dir={tmp_path / 'cache'}"]
    printed, errors = {}, {}
    for quiet in (False, True):
        assert main([*args, f"output_dir={tmp_path / str(quiet)}", *(["--quiet"] if quiet else [])]) == 0
        captured = capsys.readouterr()
        printed[quiet] = [line for line in captured.out.splitlines() if line.strip()]
        errors[quiet] = [line for line in captured.err.splitlines() if line.strip()]  # progress bars
    table = (tmp_path / "True" / "sweep.md").read_text().splitlines()
    for lines in printed.values():
        at = lines.index(table[0])
        assert lines[at:at + len(table)] == table and sum("**" in line for line in table) == 1
        assert lines[at + len(table)].startswith("best (in bold): mIoU ") and lines[-1].startswith("sweep: ")
    quiet = printed[True]
    assert errors[True] == [] and errors[False] != []
    assert len(quiet) == 4 + len(table) + 2  # a line per point, the table, the best point and the files
    assert [line.split(":")[0] for line in quiet[:4]] == [f"[{i}/4] {{'matcher.rim.temperature'" for i in (1, 2, 3, 4)]
    assert all(" mIoU " in line and str(tmp_path / "True" / "point-") in line for line in quiet[:4])
    assert len(printed[False]) > 4 * 20 and sum("time breakdown" in line for line in printed[False]) == 4


def test_quiet_test_prints_one_line(tmp_path: Path, capsys):
    assert main(["test", "--quiet", "experiment=smoke", "data.max_images=2", f"output_dir={tmp_path / 'run'}"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.count("\n") == 1
    assert re.fullmatch(rf"mIoU [\d.]+  mAcc [\d.]+  aAcc [\d.]+  \(2 images, [\d.]+ s\) → {tmp_path / 'run'}\n",
                        captured.out)


def _rows(temperatures: list, divergences: list) -> list[dict]:
    return [{"matcher.rim.temperature": t, "matcher.rim.divergence": d, "mIoU": 50 + len(str(t)) + len(str(d))}
            for t in temperatures for d in divergences]


KEYS = ["matcher.rim.temperature", "matcher.rim.divergence"]


def test_a_categorical_parameter_is_plotted_as_categories_without_a_joining_line():
    from rim_bench.commands.sweep import sweep_figure

    fig = sweep_figure(_rows([0.05, 0.1], ["kl", "js", "l1"]), KEYS[1], KEYS, fixed="experiment=smoke")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and [t.get_text() for t in ax.get_xticklabels()] == ["kl", "js", "l1"]
    assert len(ax.lines) == 2 and all(line.get_linestyle() == "None" and line.get_marker() == "o"
                                      for line in ax.lines)
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "held fixed: experiment=smoke" in caption and "one series per matcher.rim.temperature" in caption
    for flag in ([True, False], [None, 0.1]):  # bools, and a null beside numbers, are categories too
        fig = sweep_figure(_rows(flag, ["kl"]), KEYS[0], KEYS)
        assert all(line.get_linestyle() == "None" for line in fig.axes[0].lines)
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(v) for v in flag]


def test_a_numeric_parameter_is_a_line_on_a_log_axis_when_it_spans_a_factor_of_five():
    from rim_bench.commands.sweep import sweep_figure

    wide = sweep_figure(_rows([0.02, 0.05, 0.1, 0.2], ["kl", "js"]), KEYS[0], KEYS).axes[0]
    assert wide.get_xscale() == "log" and all(line.get_linestyle() == "-" for line in wide.lines)
    assert [t.get_text() for t in wide.get_xticklabels()] == ["0.02", "0.05", "0.1", "0.2"]
    assert list(wide.lines[0].get_xdata()) == [0.02, 0.05, 0.1, 0.2]
    narrow = sweep_figure(_rows([0.05, 0.1, 0.2], ["kl"]), KEYS[0], KEYS).axes[0]  # a factor of 4
    assert narrow.get_xscale() == "linear" and narrow.lines[0].get_linestyle() == "-"
    signed = sweep_figure(_rows([-1, 0, 10], ["kl"]), KEYS[0], KEYS).axes[0]  # not positive: no log axis
    assert signed.get_xscale() == "linear"
    three = [{"a": a, "b": b, "c": c, "mIoU": 1.0} for a in (1, 10) for b in (1, 2) for c in ("x", "y")]
    caption = " ".join(t.get_text() for t in sweep_figure(three, "a", ["a", "b", "c"], fixed="seed=1").texts)
    assert "held fixed: seed=1" in caption and "mean over b, c" in caption
