"""Bad input on the command line: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rim_bench.commands.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("args, fragment", [
    (["test", "experiment=smoke", "matcher.rim.temprature=0.1"], "unknown config key 'matcher.rim.temprature'"),
    (["test", "experiment=nope"], "experiment 'nope' not found"),
    (["test", "experiment=smoke", "data.name=voc21", "data.root=/no/such/dir"],
     "data root '/no/such/dir' does not exist"),
    (["test", "experiment=smoke", "proposer.superpixels.n_segments=many"], "must be int"),
    (["test", "experiment=smoke", "matcher.name=nearest"], "unknown matcher 'nearest'"),
])
def test_bad_input_is_one_clear_line(args: list[str], fragment: str):
    result = _cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rim-bench: error:") and fragment in lines[0], result.stderr


def test_config_command_prints_resolved_config():
    result = _cli("config", "experiment=smoke", "seed=3")
    assert result.returncode == 0
    assert "seed: 3" in result.stdout and "# result hash: " in result.stdout and "${" not in result.stdout


@pytest.mark.parametrize("override, fragment", [
    ("trainer.devices=0", "'trainer.devices' must be at least 1"),
    ("trainer.precision=bogus", "Precision 'bogus' is invalid"),
    ("trainer.accelerator=tpu", "torch_xla"),
    ("data.batch_size=0", "'data.batch_size' must be at least 1"),
    ("data.num_workers=-1", "'data.num_workers' must be at least 0"),
    ("data.max_images=-1", "'data.max_images' must be at least 1"),
    ("trainer.devices=3", "3 processes for 2 images"),
    ("trainer.devices=-1", "should be an int > 0"),  # -1 (all GPUs) passes our check; Lightning refuses it on CPU
])
def test_bad_trainer_and_data_values_are_one_clear_line(tmp_path, capsys, override: str, fragment: str):
    from rim_bench.commands.cli import main

    assert main(["test", "experiment=smoke", "data.max_images=2", "trainer.accelerator=cpu", override,
                 f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize("command, listed", [
    ("test", ["smoke", "rim_voc21", "matcher.*", "trainer.*", "save_predictions", "methods (method=NAME"]),
    ("sweep", ["rim_voc21", "sweeps (sweep=NAME):", "tau_subcategories", "rim_matching"]),
    ("compare", ["methods (method=NAME; compare: methods=[a,b]): clearclip, clip_dense, clip_text, cosine"]),
    ("segment", ["experiments (experiment=NAME)", "proposer.*", "sclip"]),
    ("suite", ["suites (NAME): peers, rim_benchmarks, rim_tau_subcategories, smoke", "data.*"]),
])
def test_help_lists_experiments_sweeps_methods_and_keys_without_loading_torch(command: str, listed: list[str]):
    code = (f"import sys\nfrom rim_bench.commands.cli import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch loaded' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    text = " ".join(result.stdout.split())  # the listing is wrapped
    assert result.returncode == 0 and text.endswith("no torch"), result.stderr
    for item in listed:
        assert item in text, item


@pytest.mark.parametrize("args", [["--help"], ["test", "matcher.rim.temprature=1"]])
def test_help_and_config_key_errors_load_no_heavy_library(args: list[str]):
    # Start-up is what a user waits for on every typo: these answer before torch is imported.
    # (Checking values reads the stages' declarations, which imports their modules, torch included.)
    code = ("import sys\nfrom rim_bench.commands.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = ('torch', 'lightning', 'transformers', 'diffusers', 'segment_anything')\n"
            "print('HEAVY', [m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]


@pytest.mark.parametrize("argv", [["segment", "{image}", "--classes", "sun,leaf", "experiment=smoke", "--out", "{out}"],
                                  ["plan", "experiment=smoke"], ["check-data", "experiment=smoke"],
                                  ["config", "experiment=smoke"]])
def test_commands_without_a_trainer_load_no_lightning(argv, tmp_path, smoke_root):
    """segment, plan, check-data and config never start a Trainer: Lightning (and torchmetrics) stay unloaded."""
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(image)
    argv = [a.format(image=image, out=tmp_path / "out") for a in argv]
    code = (f"import sys; from rim_bench.commands.cli import main; rc = main({argv!r}); "
            "sys.exit(10 + rc if 'lightning' in sys.modules or 'torchmetrics' in sys.modules else rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]  # 10+: Lightning was imported


def test_suite_help_lists_each_shipped_suite_once(capsys):
    """The suites were listed twice, from a hand-kept list (without `peers`) and from the files."""
    import re

    from rim_bench.commands.cli import main
    from rim_bench.core.config_index import shipped

    with pytest.raises(SystemExit):
        main(["suite", "--help"])
    text = capsys.readouterr().out
    assert "peers" in shipped("suite") and len(shipped("suite")) >= 4
    for name in shipped("suite"):
        assert len(re.findall(rf"(?<![\w/.-]){name}(?![\w/.-])", text)) == 1, name
    assert "--quiet" in text
