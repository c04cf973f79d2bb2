"""The HTML report rendered by a real browser (headless Chromium): every picture loads, and a
screenshot shows the page. Slow (a run, a 2 x 2 sweep with tiny generated references, a
browser start); needs Debian's `chromium` package, and is skipped without it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rim_bench.commands.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Flags for a sandbox-less container without network, GPU or user profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000"]
# Appended to a copy of the page: after loading, count the pictures the browser could decode.
PROBE = ("<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
         "document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + "
         "imgs.length; });</script>")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (apt install chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path):
    run = tmp_path / "run"
    assert main(["test", "experiment=smoke", "data.max_images=3", "save_overlays=2", f"output_dir={run}"]) == 0
    sweep = tmp_path / "tau_subcategories.yaml"  # subcategories x tau in small, generated references
    sweep.write_text("parameters:\n  references.diffusion.n_subcategories: [1, 2]\n"
                     "  references.diffusion.attn_threshold: [0.3, 0.5]\n")
    assert main(["sweep", "experiment=tiny", f"sweep={sweep}", "data.max_images=2",
                 f"output_dir={tmp_path / 'sweep'}"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(run), str(tmp_path / "sweep"), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert 'class="fill"' in page and "<pre>" in page  # IoU bars and configs
    assert "mIoU_vs_references.diffusion.n_subcategories.png" in page  # the sweep's plot
    assert "mIoU_vs_references.diffusion.attn_threshold.png" in page

    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, "the page's script did not run"
    assert int(loaded.group(2)) >= 4 and loaded.group(1) == loaded.group(2), f"pictures loaded: {loaded.group(0)}"

    shot = out / "screenshot.png"
    result = _chromium("--window-size=1100,1600", f"--screenshot={shot}", (out / "report.html").as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (1600, 1100, 3)
    coloured = (pixels.max(-1) - pixels.min(-1)) > 60  # bars, plots and overlays, not text or background
    assert coloured.mean() > 0.01, "the screenshot is (nearly) blank"
    print(f"screenshot: {shot}")
