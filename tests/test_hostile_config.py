"""Issue 20, case 4: NaN and infinity are refused by the same schema check as the ranges.

`matcher.rim.temperature=.nan` (or `.inf`) used to pass every range comparison and give
mIoU 12.90 instead of 62.64 with exit code 0.
"""

from __future__ import annotations

import pytest

from rim_bench.commands.cli import main
from rim_bench.core.config import load_config
from rim_bench.core.errors import ConfigError


@pytest.mark.parametrize("override", [
    "matcher.rim.temperature=.nan",
    "matcher.rim.temperature=.inf",
    "matcher.rim.temperature=-.inf",
    "segmenter.paint.background.score.threshold=.nan",  # a key with no range at all
    "proposer.superpixels.compactness=.inf",
    "references.diffusion.guidance_scale=.NaN",
])
def test_case4_non_finite_numbers_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^command line: '{key}' must be a finite number, got -?(nan|inf);"):
        load_config(["experiment=smoke", override])


def test_case4_non_finite_from_an_interpolation_is_refused(monkeypatch):
    monkeypatch.setenv("RIM_BENCH_TEST_T", "nan")  # decoded to a float only when resolved
    with pytest.raises(ConfigError, match=r"resolved config: 'matcher.rim.temperature' must be a finite number"):
        load_config(["experiment=smoke", "matcher.rim.temperature=${oc.decode:${oc.env:RIM_BENCH_TEST_T}}"])


def test_case4_cli_exits_2_in_one_line_before_any_model(capsys):
    assert main(["test", "experiment=smoke", "matcher.rim.temperature=.nan"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == ("rim-bench: error: command line: 'matcher.rim.temperature' must be a finite number, "
                           "got nan; give a number like 0.1")


def test_case4_finite_numbers_still_load():
    cfg = load_config(["experiment=smoke", "matcher.rim.temperature=0.05",
                       "segmenter.paint.background.score.threshold=-3"])
    assert cfg.matcher.rim.temperature == 0.05


def test_case4_api_overrides_refuse_nan_too():
    from rim_bench.run.assembly import experiment_config

    with pytest.raises(ConfigError, match="'matcher.rim.temperature' must be a finite number, got nan"):
        experiment_config("smoke", {"matcher.rim.temperature": float("nan")})
