"""Issue 20: verified caches (cases 5 and 10).

Every cache entry carries a checksum of its content, written when it is published and
checked when it is read, and its values are checked where that is cheap (region ids in
range, a region map of the image's size, finite floats). An entry altered on disk, or
written without a checksum by an older rim-bench, is set aside with one warning and
computed again, and the run gives the number it gives on a fresh cache.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from rim_bench.commands.cli import main
from rim_bench.run.region_cache import RegionCache
from rim_bench.stages.references.bank import (
    bank_made_for,
    load_bank,
    load_shard,
    save_shard,
    shard_or_none,
    write_bank,
)

DAMAGED = "damaged cache entry"


@pytest.fixture(scope="module")
def pristine(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A cache filled by one smoke run (its bank and every image's regions), and that run's mIoU."""
    cache = tmp_path_factory.mktemp("pristine") / "cache"
    return cache, _smoke(cache, smoke_root, cache.parent / "run")[0]


@pytest.fixture
def cache(pristine: tuple[Path, float], tmp_path: Path) -> Path:
    """A copy of the pristine cache that a test may damage."""
    copy = tmp_path / "cache"
    shutil.copytree(pristine[0], copy)
    return copy


def _smoke(cache: Path, smoke_root: Path, out: Path) -> tuple[float, list[str]]:
    """Run `rim-bench test experiment=smoke` on `cache`: its mIoU and the damaged-cache warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["test", "experiment=smoke", f"data.root={smoke_root}", f"cache_dir={cache}",
                     f"output_dir={out}"])
    assert code == 0
    damaged = [str(w.message) for w in caught if DAMAGED in str(w.message)]
    return json.loads((out / "metrics.json").read_text())["mIoU"], damaged


def _rerun(cache: Path, smoke_root: Path, pristine: tuple[Path, float], what: str) -> None:
    """A run on the damaged `cache` warns once, about `what`, and gives the pristine run's mIoU."""
    miou, damaged = _smoke(cache, smoke_root, cache.parent / "rerun")
    assert miou == pristine[1]
    assert len(damaged) == 1 and what in damaged[0] and len(damaged[0].splitlines()) == 1, damaged


def _rewrite(path: Path, change) -> None:
    """Alter a safetensors file's tensors in place, keeping its format (and its metadata, any
    checksum included): what a silent disk or a careless edit leaves."""
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _bank_dir(cache: Path) -> Path:
    (folder,) = (cache / "banks").iterdir()
    return folder


def _region_files(cache: Path) -> list[Path]:
    return sorted((cache / "regions").rglob("*.safetensors"))


# ---------------------------------------------------------------- 5. an altered bank


def test_case5_a_bank_with_altered_finite_floats_is_set_aside_and_rebuilt(cache, smoke_root, pristine):
    folder = _bank_dir(cache)

    def flip_every_7th(tensors):
        tensors["features"].view(-1)[::7] *= -1  # still finite: only a checksum can tell

    _rewrite(folder / "bank.safetensors", flip_every_7th)
    _rerun(cache, smoke_root, pristine, f"'{folder}'")  # mIoU 50.51 from the altered bank before
    assert len(list(folder.parent.glob(f"{folder.name}.damaged-*"))) == 1


# ------------------------------------------------------- 10. damaged caches set aside


def test_case10_a_region_payload_with_flipped_bytes_is_set_aside(cache, smoke_root, pristine):
    path = _region_files(cache)[0]
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    start = 8 + header_len + json.loads(data[8:8 + header_len])["region_map"]["data_offsets"][0]
    data[start + 3] ^= 0x40  # the high byte of the first int32 region id: 0 becomes 1073741824
    path.write_bytes(bytes(data))
    _rerun(cache, smoke_root, pristine, path.name)  # before: "region map values 0..1073741850" on every rerun


def test_case10_a_truncated_region_map_is_set_aside(cache, smoke_root, pristine):
    path = _region_files(cache)[0]
    region_map, features = RegionCache(path.parent).get(path.stem)
    RegionCache(path.parent).put(path.stem, region_map[:-1], features)  # a valid entry, one row short
    _rerun(cache, smoke_root, pristine, path.name)  # before: "prediction and label differ in size"


def test_case10_nan_in_cached_region_features_is_set_aside(cache, smoke_root, pristine):
    path = _region_files(cache)[0]
    region_map, features = RegionCache(path.parent).get(path.stem)
    features[0] = float("nan")
    RegionCache(path.parent).put(path.stem, region_map, features)  # fresh NaN features are refused
    _rerun(cache, smoke_root, pristine, path.name)  # before: accepted


def test_case10_a_cached_bank_holding_inf_is_set_aside_and_rebuilt(cache, smoke_root, pristine):
    folder = _bank_dir(cache)
    bank = load_bank(folder)
    bank.features[3, 5] = float("inf")
    made_for = bank_made_for(json.loads((folder / "key.json").read_text()))
    write_bank(bank, folder, made_for=made_for)  # a valid entry, with a value no bank can have
    _rerun(cache, smoke_root, pristine, f"'{folder}'")  # before: "delete its cache folder", exit 2


# ------------------------------------------- every store: checksum, old files, values


def test_case10_a_bank_whose_json_was_edited_is_set_aside_and_rebuilt(tmp_path: Path):
    from rim_bench.core.types import ReferenceBank
    from rim_bench.stages.references.bank import cached_bank

    def build(work: Path) -> ReferenceBank:
        return ReferenceBank(torch.randn(3, 4), torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]),
                             ["cat", "dog"], ["cat/x", "dog/y", "dog/z"], [{}, {}, {}])

    _, folder, _ = cached_bank(tmp_path, {"k": 1}, build)
    names = folder / "bank.json"
    names.write_text(names.read_text().replace('"cat"', '"tmp"').replace('"dog"', '"cat"').replace('"tmp"', '"dog"'))
    with pytest.warns(UserWarning, match=f"{DAMAGED} '{folder}'.*bank.json' does not match its checksum") as caught:
        bank, _, hit = cached_bank(tmp_path, {"k": 1}, build)  # the classes swapped: every label wrong before
    assert not hit and bank.class_names == ["cat", "dog"] and len(caught) == 1



def _unverified(path: Path) -> None:
    """Rewrite a safetensors file as an older rim-bench wrote it: the same tensors, no checksum."""
    with safe_open(str(path), framework="pt") as f:
        metadata = {k: v for k, v in (f.metadata() or {}).items() if k != "checksum"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata=metadata or None)


def test_case10_entries_written_without_a_checksum_are_set_aside_as_unverified(tmp_path: Path):
    shard = tmp_path / "references" / "cat" / "0123.safetensors"
    save_shard(shard, {"features": torch.ones(2, 4)}, {"meta": [], "dropped": 0})
    _unverified(shard)
    with pytest.warns(UserWarning, match=f"{DAMAGED} '{shard}'.*without a checksum") as caught:
        assert shard_or_none(shard) is None
    assert len(caught) == 1 and not shard.exists()
    regions = RegionCache(tmp_path / "regions")
    regions.put("img", torch.zeros(3, 3, dtype=torch.long), torch.ones(1, 4))
    _unverified(tmp_path / "regions" / "img.safetensors")
    with pytest.warns(UserWarning, match=f"{DAMAGED} .*img.safetensors.*without a checksum"):
        assert regions.get("img") is None


def test_case10_region_ids_out_of_range_and_a_map_of_another_size_are_set_aside(tmp_path: Path):
    regions = RegionCache(tmp_path)
    regions.put("img", torch.tensor([[0, 1], [-1, 1]]), torch.ones(2, 4))
    assert regions.get("img", (2, 2))[0].tolist() == [[0, 1], [-1, 1]]
    with pytest.warns(UserWarning, match=r"img.safetensors.*is \(2, 2\), the image \(2, 3\)"):
        assert regions.get("img", (2, 3)) is None
    regions.put("img", torch.tensor([[0, 2], [-1, 1]]), torch.ones(2, 4))  # region 2 of 2
    with pytest.warns(UserWarning, match="img.safetensors.*holds values -1..2 for 2 regions"):
        assert regions.get("img", (2, 2)) is None


def test_case10_altered_stored_normalizers_are_set_aside_and_recomputed(tmp_path: Path, monkeypatch):
    from rim_bench.core.types import ReferenceBank
    from rim_bench.stages.matching import rim

    monkeypatch.setattr(rim, "STORE_NORMALIZERS_FROM", 4)
    g = torch.Generator().manual_seed(0)
    bank = ReferenceBank(torch.randn(6, 8, generator=g), torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6),
                         ["a", "b", "c"], [f"s{i}" for i in range(6)])
    bank.directory = tmp_path
    expected = rim.stored_bank_normalizers(bank, 0.1).log_norm
    (stored,) = tmp_path.glob("rim_normalizers_*.safetensors")

    def negate(tensors):
        tensors["log_norm"].neg_()

    _rewrite(stored, negate)
    with pytest.warns(UserWarning, match=f"{DAMAGED} '{stored}'.*checksum") as caught:
        torch.testing.assert_close(rim.stored_bank_normalizers(bank, 0.1).log_norm, expected)
    assert len(caught) == 1 and len(list(tmp_path.glob("rim_normalizers_*.damaged-*"))) == 1


def test_case10_altered_generated_images_and_contact_sheet_strips_are_made_again(tmp_path: Path):
    from rim_bench.commands.api import RIM

    first = RIM.from_config("tiny", cache_dir=str(tmp_path)).set_vocabulary(["background", "sun"])
    reference = sorted((tmp_path / "references").rglob("*.safetensors"))[0]
    generated = next((tmp_path / "generated").rglob(str(reference.relative_to(reference.parents[1]))))

    def flip_pixels(tensors):
        tensors["images"][0, :4] ^= 0xFF  # still an image: only a checksum can tell

    _rewrite(generated, flip_pixels)
    Image.new("RGB", (8, 8)).save(reference.with_suffix(".png"))  # another strip, a valid PNG
    shutil.rmtree(tmp_path / "banks")  # the bank is assembled again from the shards
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = RIM.from_config("tiny", cache_dir=str(tmp_path)).set_vocabulary(["background", "sun"])
    damaged = [str(w.message) for w in caught if DAMAGED in str(w.message)]
    assert len(damaged) == 3, damaged
    assert any(f"'{reference.with_suffix('.png')}'" in m and "checksum" in m for m in damaged)
    assert any(f"'{reference}'" in m and "contact-sheet strip" in m for m in damaged)  # made again with it
    assert any(f"'{generated}'" in m and "checksum" in m for m in damaged)
    assert torch.equal(first.features, second.features)
    assert load_shard(reference)[1]["meta"]  # made again, with its strip's checksum


def test_case10_a_freshly_built_bank_holding_nan_is_never_published(tmp_path: Path):
    from rim_bench.core.errors import DataError
    from rim_bench.core.types import ReferenceBank
    from rim_bench.stages.references.bank import cached_bank

    def build(work: Path) -> ReferenceBank:
        return ReferenceBank(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.tensor([0, 1]),
                             torch.tensor([0, 1]), ["cat", "dog"], ["cat/x", "dog/y"], [{}, {}])

    with pytest.raises(DataError, match=r"built in .*\.partial has non-finite features \(NaN or inf\): check"):
        cached_bank(tmp_path, {"k": 1}, build)
    assert not list((tmp_path / "banks").rglob("bank.json"))  # before: published, refused by every run after
