"""The controlled simulation (experiments/simulation/simulate.py): generator, sanity of the accuracies, outputs."""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _load_simulate():
    """Import the script as a module (experiments/ is not a package)."""
    path = REPO / "experiments" / "simulation" / "simulate.py"
    spec = importlib.util.spec_from_file_location("rim_bench_simulate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


sim = _load_simulate()


@pytest.fixture(scope="module")
def matchers():
    return sim.build_matchers(sim.default_temperature())


def test_generator_is_deterministic_for_a_seed():
    cfg = sim.SimConfig(n_regions=200, imbalance=4.0)
    a, b, other = sim.generate(cfg, 7), sim.generate(cfg, 7), sim.generate(cfg, 8)
    for field in ("class_centres", "subcategory_centres", "regions", "labels", "region_subcategories"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(a.bank.features, b.bank.features)
    assert torch.equal(a.bank.class_ids, b.bank.class_ids)
    assert not torch.equal(a.regions, other.regions)
    assert a.regions.shape == (200, cfg.dim) and a.labels.shape == (200,)
    assert a.bank.num_classes == cfg.n_classes and len(a.bank.subcategory_names) == cfg.n_classes * cfg.n_subcategories


def test_generator_has_the_requested_structure():
    cfg = sim.SimConfig(twin_fraction=0.4, twin_cosine=0.8, spread=1.5, n_regions=10)
    data = sim.generate(cfg, 0)
    c = data.class_centres.double()
    # round(0.4 · 10 / 2) = 2 twin pairs: (0, 1) and (2, 3).
    assert float(c[0] @ c[1]) == pytest.approx(0.8, abs=1e-5)
    assert float(c[2] @ c[3]) == pytest.approx(0.8, abs=1e-5)
    cos_sub = (data.subcategory_centres.double() * c[:, None]).sum(-1)  # (C, S)
    assert torch.allclose(cos_sub, torch.full_like(cos_sub, 1 / np.sqrt(1 + 1.5**2)), atol=1e-5)
    # Imbalance: references per class span the requested ratio (R = 2, ratio 16 → 1 ... 8 per subcategory).
    counts = torch.bincount(sim.generate(replace(cfg, imbalance=16.0), 0).bank.class_ids)
    assert int(counts.max()) // int(counts.min()) == 8


def test_domain_shift_and_background_knobs():
    cfg = sim.SimConfig(n_regions=100)
    plain, shifted = sim.generate(cfg, 3), sim.generate(replace(cfg, shift=0.8), 3)
    offset = shifted.regions - plain.regions  # one shared vector of norm 0.8; references unchanged
    assert torch.allclose(offset, offset[:1].expand_as(offset), atol=1e-5)
    assert float(offset[0].norm()) == pytest.approx(0.8, abs=1e-5)
    assert torch.equal(shifted.bank.features, plain.bank.features)
    with_bg = sim.generate(replace(cfg, background_fraction=0.4), 3)
    assert with_bg.bank.class_names[-1] == "background" and with_bg.bank.num_classes == cfg.n_classes + 1
    assert int((with_bg.labels == cfg.n_classes).sum()) == round(100 * 0.4 / 0.6)  # 67 background regions
    assert torch.equal(with_bg.regions[:100], plain.regions)  # the object regions stay the same draws
    # Background references come from the covered kinds of stuff only: R per kind.
    assert int((with_bg.bank.class_ids == cfg.n_classes).sum()) == cfg.stuff_covered * cfg.refs_per_subcategory


def test_easy_setting_every_method_near_perfect(matchers):
    cfg = sim.SimConfig(sigma=0.05, twin_fraction=0.0, n_regions=500)
    for seed in (0, 1):
        data = sim.generate(cfg, seed)
        for name, matcher in matchers.items():
            assert sim.accuracy(matcher, data) >= 0.95, (name, seed)


def test_accuracy_falls_as_noise_grows(matchers):
    easy = sim.generate(sim.SimConfig(sigma=0.25, n_regions=1000), 0)
    hard = sim.generate(sim.SimConfig(sigma=5.0, n_regions=1000), 0)
    for name, matcher in matchers.items():
        acc_easy, acc_hard = sim.accuracy(matcher, easy), sim.accuracy(matcher, hard)
        assert acc_hard < acc_easy - 0.2, (name, acc_easy, acc_hard)
        assert acc_hard > 1.5 / easy.bank.num_classes, (name, acc_hard)  # still above chance


def test_quick_run_writes_every_output(tmp_path, capsys):
    rows = sim.main(["--out", str(tmp_path), "--quick"])
    methods = list(sim.build_matchers(sim.default_temperature()))
    q = sim.QUICK
    per_setting = {"noise": len(q["sigmas"]), "spread": len(q["spreads"]),
                   "imbalance": len(q["imbalances"]), "confusion": len(q["twin_cosines"])}
    expected = sum(per_setting.values()) * len(q["seeds"]) * len(methods)

    with (tmp_path / "simulation.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == expected
    assert {r["setting"] for r in table} == set(per_setting)
    assert {r["method"] for r in table} == set(methods)
    assert {"rim", "rim_alpha0.5", "cosine_max", "prototype"} <= set(methods)
    noise_sigmas = sorted({float(r["sigma"]) for r in table if r["setting"] == "noise"})
    assert noise_sigmas == sorted(q["sigmas"])
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in table)

    md = (tmp_path / "simulation.md").read_text()
    for heading in ("Region noise", "Subcategory spread", "Reference imbalance", "confusion"):
        assert heading in md
    assert all(f"| {m} " in md or f" {m} |" in md for m in methods)
    assert "±" in md

    for heading in ("## Temperature", "## Domain shift", "## Background rules", " at T = ", "calibrated 0.5"):
        assert heading in md, heading
    temperature = list(csv.DictReader((tmp_path / "temperature.csv").open()))
    rim_rows = [r for r in temperature if r["method"] == "rim"]
    assert len(rim_rows) == len(sim.CONDITIONS) * len(q["seeds"]) * len(q["temperatures"])
    assert {float(r["temperature"]) for r in rim_rows} == set(q["temperatures"])
    shift = list(csv.DictReader((tmp_path / "domain_shift.csv").open()))
    assert {float(r["shift"]) for r in shift} == set(q["shifts"]) and {r["method"] for r in shift} == set(methods)
    background = list(csv.DictReader((tmp_path / "background.csv").open()))
    assert {"class", "probability 0.1", "calibrated 0.5", "score 0.4"} <= {r["rule"] for r in background}
    assert all(0.0 <= float(r["mIoU"]) <= 100.0 for r in background)
    for name in [*sim.PLOTS.values(), "accuracy_vs_temperature.png"]:
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (tmp_path / "accuracy_vs_noise.png").exists() and (tmp_path / "accuracy_vs_spread.png").exists()
    assert "rows in" in capsys.readouterr().out
