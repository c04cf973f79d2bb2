"""Documentation that must agree with the data it describes."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ["voc20", "voc21", "cityscapes", "ade20k", "coco_object", "context59", "context60"]


def test_peers_page_prints_every_published_number():
    """docs/peers.md's table row of each method holds published.yaml's numbers, in its column order."""
    published = yaml.safe_load((ROOT / "rim_bench/data/published.yaml").read_text())["methods"]
    rows = {}
    for line in (ROOT / "docs/peers.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(BENCHMARKS):
            rows[cells[0]] = cells[2:]
    for method, entry in published.items():
        expected = ["-" if entry["miou"][b] is None else f"{entry['miou'][b]:.1f}" for b in BENCHMARKS]
        assert rows.get(method) == expected, method


def test_no_machine_paths_in_shipped_files():
    """Configs, data files and docs cite sources a user has, never this machine's paths."""
    for path in [*ROOT.glob("rim_bench/**/*.yaml"), *ROOT.glob("docs/*.md"), *ROOT.glob("*.md"),
                 *ROOT.glob("experiments/**/*.md")]:
        text = path.read_text()
        assert "PEERS.md" not in text and "/work/" not in text, path
