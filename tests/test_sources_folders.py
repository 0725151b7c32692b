"""Image-folder sources: odd image modes, broken files, labels, ImageNet layout, Ray path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.config import DatasetConfig
from orchestrator.data.base import held_out
from orchestrator.data.images import decode_image
from orchestrator.data.sources import SOURCES, load_arrays
from orchestrator.runtime.ray_sources import load_dataset
from tests.test_sources_parquet import local_ray, ray_rows


def _png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_messy_folder(root: Path) -> dict[str, str]:
    """A folder with good images in every odd mode and broken files; returns kinds."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    files = {
        "a/rgb.jpg": _png_bytes(rgb, "JPEG"),
        "a/gray.png": _png_bytes(rgb.convert("L")),
        "a/rgba.png": _png_bytes(rgb.convert("RGBA")),
        "a/palette.gif": _png_bytes(rgb.convert("P"), "GIF"),
        "b/cmyk.jpg": _png_bytes(rgb.convert("CMYK"), "JPEG"),
        "b/sixteen.png": _png_bytes(Image.fromarray(
            (rng.integers(0, 65536, (30, 30))).astype(np.uint16))),
        "b/zero.png": b"",
        "b/notes.txt": b"not an image at all\n",
        "b/truncated.png": _png_bytes(rgb)[:200],
        "b/corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)),
        ".hidden/skip.png": _png_bytes(rgb),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return {"good": ["a/gray.png", "a/palette.gif", "a/rgb.jpg", "a/rgba.png", "b/cmyk.jpg",
                     "b/sixteen.png"],
            "bad": ["b/corrupt.jpg", "b/notes.txt", "b/truncated.png", "b/zero.png"]}


def test_decode_image_modes():
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8))
    for img in (base, base.convert("L"), base.convert("RGBA"), base.convert("CMYK"),
                base.convert("P"), base.convert("1"), base.convert("LA")):
        out = decode_image(_png_bytes(img, "TIFF" if img.mode == "CMYK" else "PNG"), 16)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8, img.mode
    # 16-bit values are scaled (65535 -> 255), not clipped
    sixteen = Image.fromarray(np.full((20, 20), 65535, np.uint16))
    assert decode_image(_png_bytes(sixteen), 8).min() == 255
    half = Image.fromarray(np.full((20, 20), 32768, np.uint16))
    assert 127 <= decode_image(_png_bytes(half), 8).mean() <= 129
    with pytest.raises(ValueError, match="zero-byte"):
        decode_image(b"", 8)
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"hello", 8)


def test_center_crop_keeps_the_middle():
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, 40:80] = 255                        # a white centre square
    out = decode_image(_png_bytes(Image.fromarray(arr)), 20)
    assert out.shape == (20, 20, 3) and out.mean() > 250


def test_image_folder_skips_and_lists_broken_files(tmp_path: Path):
    kinds = make_messy_folder(tmp_path / "imgs")
    ds = DatasetConfig(name="g", source="image_folder", path=str(tmp_path / "imgs"),
                       resolution=16)
    a = load_arrays(ds)
    # ids are positions in the sorted listing (hidden files excluded), bad ones left out,
    # and the held-out reference share (data.datasets[i].holdout) removed first
    listing = sorted(kinds["good"] + kinds["bad"])
    held = {listing[i] for i in held_out(len(listing), ds)}
    assert len(held) == 1                                   # round(10 * 0.1)
    good = [f for f in kinds["good"] if f not in held]
    assert a.images.shape == (len(good), 16, 16, 3) and a.images.dtype == np.uint8
    assert sorted(s.path for s in a.skipped) == [f for f in kinds["bad"] if f not in held]
    assert all(s.reason for s in a.skipped)
    assert [listing[i] for i in a.ids] == good
    assert list(a.keys) == good and list(a.uris) == [f"{tmp_path}/imgs/{f}" for f in good]
    assert np.all(a.labels == -1) and a.num_classes == 0
    again = load_arrays(ds)
    assert again.fingerprint == a.fingerprint
    np.testing.assert_array_equal(again.images, a.images)


def test_image_folder_class_subfolders_and_limit(tmp_path: Path):
    make_messy_folder(tmp_path / "imgs")
    ds = DatasetConfig(name="g", source="image_folder", path=str(tmp_path / "imgs"),
                       resolution=8, class_subfolders=True)
    a = load_arrays(ds)
    assert a.num_classes == 2 and list(np.bincount(a.labels)) == [4, 2]
    b = load_arrays(DatasetConfig(name="g", source="image_folder", path=str(tmp_path / "imgs"),
                                  resolution=8, class_subfolders=True, limit=5))
    assert len(b.ids) + len(b.skipped) == 5


def test_imagenet_layout(tmp_path: Path):
    rng = np.random.default_rng(2)
    img = _png_bytes(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)), "JPEG")
    for syn in ("n02", "n01", "n03"):
        (tmp_path / "train" / syn).mkdir(parents=True)
        for j in range(2):
            (tmp_path / "train" / syn / f"{syn}_{j}.JPEG").write_bytes(img)
    (tmp_path / "val").mkdir()
    rows = ["ImageId,PredictionString"]
    for j, syn in enumerate(("n03", "n01")):
        (tmp_path / "val" / f"ILSVRC2012_val_{j}.JPEG").write_bytes(img)
        rows.append(f"ILSVRC2012_val_{j},{syn} 1 2 3 4")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    train = load_arrays(DatasetConfig(name="i", source="imagenet", path=str(tmp_path),
                                      split="train", resolution=8, conditional=True))
    assert train.num_classes == 3 and list(train.labels) == [0, 0, 1, 1, 2, 2]  # n01 n02 n03
    val = load_arrays(DatasetConfig(name="i", source="imagenet", path=str(tmp_path),
                                    split="val", resolution=8))
    assert list(val.labels) == [2, 0] and val.num_classes == 3
    assert list(train.keys[:2]) == ["train/n01/n01_0.JPEG", "train/n01/n01_1.JPEG"]
    assert list(val.keys) == ["val/ILSVRC2012_val_0.JPEG", "val/ILSVRC2012_val_1.JPEG"]
    assert val.uris[0] == f"{tmp_path}/val/ILSVRC2012_val_0.JPEG"


def test_celeba_hq_is_unconditional(tmp_path: Path):
    make_messy_folder(tmp_path / "c")
    a = SOURCES["celeba_hq"].arrays(DatasetConfig(name="c", source="celeba_hq",
                                                  path=str(tmp_path / "c"), resolution=8))
    assert len(a.ids) == 6 and np.all(a.labels == -1)


@pytest.mark.ray
def test_ray_datasets_match_the_arrays(tmp_path: Path):
    """One Ray session for both Ray paths (array-backed and folder): the same ids, keys,
    uris, images and labels as the arrays, and the folder's bad files kept as error rows
    (zero image, the reason), so ``count`` is every row (issue 23: the encode stage got
    fewer latents than images when the workers dropped them)."""
    make_messy_folder(tmp_path / "imgs")
    folder = DatasetConfig(name="g", source="image_folder", path=str(tmp_path / "imgs"),
                           resolution=8)
    digits = DatasetConfig(name="d", source="digits", resolution=8, limit=40)
    with local_ray(num_cpus=1):
        for ds in (digits, folder):
            arrays = load_arrays(ds)
            data = load_dataset(ds)
            assert data.fingerprint == arrays.fingerprint
            rows = ray_rows(data)
            assert data.count == len(rows) == len(arrays.ids) + len(arrays.skipped)
            good = [r for r in rows if not r["error"]]
            bad = [r for r in rows if r["error"]]
            np.testing.assert_array_equal([r["id"] for r in good], arrays.ids)
            assert [r["key"] for r in good] == list(arrays.keys)
            assert [r["uri"] for r in good] == list(arrays.uris)
            np.testing.assert_array_equal(np.stack([r["image"] for r in good]), arrays.images)
            np.testing.assert_array_equal([r["label"] for r in good], arrays.labels)
            assert {r["key"]: r["error"] for r in bad} == {s.path: s.reason
                                                          for s in arrays.skipped}
            assert all(not r["image"].any() and r["image"].shape == (8, 8, 3) for r in bad)
            assert bool(bad) == (ds is folder)
