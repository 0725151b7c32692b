"""The held-out reference: which images it holds, that training never sees them, its
config errors (exit 2, one line), and that the metrics, the trial key, MLflow params
and the report header use it."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import minimal_config
from orchestrator import run
from orchestrator.config import ConfigError, DatasetConfig
from orchestrator.data.base import held_out
from orchestrator.data.images import read_idx, resize_batch
from orchestrator.config.plan import TrialPlan
from orchestrator.data.sources import (check_dataset, load_arrays, load_reference, reference_count,
                                       reference_origin)


def fm(path: Path, **kw) -> DatasetConfig:
    return DatasetConfig(name="f", source="fashion_mnist", path=str(path), split="train", **kw)


def digits(**kw) -> DatasetConfig:
    return DatasetConfig(name="d", source="digits", resolution=8, **kw)


def test_fashion_mnist_reference_is_the_test_split(fmnist_dir: Path):
    ref = load_reference(fm(fmnist_dir, resolution=28), cap=30)
    test = read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(fmnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert len(ref.ids) == 30 and len(np.unique(ref.ids)) == 30 and ref.ids.max() < len(test)
    np.testing.assert_array_equal(ref.images[..., 0], test[ref.ids])   # 28 px: no resize
    np.testing.assert_array_equal(ref.labels, labels[ref.ids])
    assert len(load_reference(fm(fmnist_dir), cap=None).ids) == len(test) == 50
    assert reference_count(fm(fmnist_dir), 30) == 30
    assert reference_count(fm(fmnist_dir), 1000) == 50
    assert "split 'test'" in reference_origin(fm(fmnist_dir))
    # the cap is a seeded subsample; limit/skew of the training entry do not touch it
    again = load_reference(fm(fmnist_dir, resolution=28, limit=20, skew={"*": 0.5}), cap=30)
    np.testing.assert_array_equal(again.ids, ref.ids)
    assert again.fingerprint == ref.fingerprint
    other = load_reference(fm(fmnist_dir, resolution=28, seed=1), cap=30)
    assert not np.array_equal(other.ids, ref.ids)
    assert load_reference(fm(fmnist_dir, resolution=28), cap=31).fingerprint != ref.fingerprint


def test_fashion_mnist_training_images_do_not_depend_on_the_holdout(fmnist_dir: Path):
    a = load_arrays(fm(fmnist_dir, limit=50))
    b = load_arrays(fm(fmnist_dir, limit=50, holdout=0.5))
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.ids, b.ids)
    # the training fingerprint is still not the reference's
    assert load_reference(fm(fmnist_dir, limit=50)).fingerprint != a.fingerprint


def test_digits_reference_is_a_seeded_held_out_share_disjoint_from_training():
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    n = len(raw)
    ds = digits(holdout=0.2)
    ref, train = load_reference(ds), load_arrays(ds)
    assert len(ref.ids) == round(0.2 * n) and len(train.ids) == n - len(ref.ids)
    assert np.intersect1d(ref.ids, train.ids).size == 0          # no image in both
    np.testing.assert_array_equal(np.union1d(ref.ids, train.ids), np.arange(n))
    np.testing.assert_array_equal(ref.images[..., 0], raw[ref.ids])  # 8 px: no resize
    # removed before limit and skew: the reference does not move with them, and the
    # training subset is drawn from the rest only
    limited = load_arrays(digits(holdout=0.2, limit=100, skew={"0": 0.5}))
    assert np.intersect1d(limited.ids, ref.ids).size == 0 and len(limited.ids) == 100
    np.testing.assert_array_equal(load_reference(digits(holdout=0.2, limit=100)).ids, ref.ids)
    # seeded by the dataset seed; the holdout share names the training fingerprint
    np.testing.assert_array_equal(load_reference(digits(holdout=0.2)).ids, ref.ids)
    assert not np.array_equal(load_reference(digits(holdout=0.2, seed=1)).ids, ref.ids)
    assert load_arrays(digits(holdout=0.3)).fingerprint != train.fingerprint
    capped = load_reference(ds, cap=50)
    assert len(capped.ids) == 50 and set(capped.ids) <= set(ref.ids)
    assert "held-out share 0.2 of digits" in reference_origin(ds)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_reference_holds_out_whole_files(tmp_path: Path):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            (root / c / f"{i:02d}.png").write_bytes(_png(10 * i + (5 if c == "dog" else 0)))
    ds = DatasetConfig(name="g", source="image_folder", path=str(root), resolution=8,
                       class_subfolders=True, holdout=0.25)
    ref, train = load_reference(ds), load_arrays(ds)
    listing = sorted(f"{c}/{i:02d}.png" for c in ("cat", "dog") for i in range(10))
    np.testing.assert_array_equal(ref.ids, held_out(20, ds))
    assert len(ref.ids) == 5 and np.intersect1d(ref.ids, train.ids).size == 0
    for i, img in zip(ref.ids, ref.images):   # each reference image is its own file
        c, f = listing[i].split("/")
        assert img.mean() == pytest.approx(10 * int(f[:2]) + (5 if c == "dog" else 0), abs=1)
    assert list(ref.labels) == [0 if listing[i].startswith("cat") else 1 for i in ref.ids]
    assert check_dataset(ds, "k") == 15 and reference_count(ds) == 5
    with pytest.raises(ConfigError, match=r"^k\.holdout: 0\.01 of 20 images holds out none"):
        check_dataset(replace(ds, holdout=0.01), "k")
    with pytest.raises(ConfigError, match=r"^k\.holdout: leaves no training image"):
        check_dataset(replace(ds, holdout=0.99), "k")


def test_imagenet_reference_is_the_val_split(tmp_path: Path):
    for syn in ("n01", "n02"):
        (tmp_path / "train" / syn).mkdir(parents=True)
        (tmp_path / "val" / syn).mkdir(parents=True)
        for j in range(3):
            (tmp_path / "train" / syn / f"{j}.png").write_bytes(_png(j))
        (tmp_path / "val" / syn / "v.png").write_bytes(_png(200))
    ds = DatasetConfig(name="i", source="imagenet", path=str(tmp_path), split="train",
                       resolution=8, conditional=True)
    ref = load_reference(ds)
    assert len(ref.ids) == 2 and list(ref.labels) == [0, 1] and ref.images.min() >= 199
    assert load_arrays(ds).fingerprint == load_arrays(replace(ds, holdout=0.5)).fingerprint
    with pytest.raises(ConfigError, match=r"^k\.split: 'val' is the held-out reference"):
        check_dataset(replace(ds, split="val"), "k")
    (tmp_path / "val" / "n01" / "v.png").unlink()
    (tmp_path / "val" / "n02" / "v.png").unlink()
    with pytest.raises(ConfigError, match=r"^k\.path: the reference split 'val' has no images"):
        check_dataset(ds, "k")


@pytest.mark.parametrize("dataset, message", [
    ({"holdout": 1.5}, "error: data.datasets[0].holdout: the held-out reference share must "
                       "be in (0, 1), got 1.5"),
    ({"holdout": 0}, "error: data.datasets[0].holdout: the held-out reference share must"),
    ({"holdout": 0.0001, "limit": None}, "error: data.datasets[0].holdout: 0.0001 of 1797 "
                                         "images holds out none"),
    ({"holdout": 0.9999, "limit": None}, "error: data.datasets[0].holdout: leaves no training"),
    ({"skew": {"*": 0.0}}, "error: data.datasets[0].skew: leaves no training image"),
    ({"source": "fashion_mnist", "split": "test", "path": "FMNIST"},
     "error: data.datasets[0].split: 'test' is the held-out reference of fashion_mnist"),
])
def test_bad_references_exit_2_with_one_line(dataset, message, write_config, capsys,
                                              fmnist_dir):
    cfg = minimal_config()
    entry = {**cfg["data"]["datasets"][0], **dataset}
    if entry.get("path") == "FMNIST":
        entry["path"] = str(fmnist_dir)
    cfg["data"]["datasets"][0] = entry
    assert run.main([str(write_config(cfg)), "--dry-run"]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith(message), out.err
    assert out.out == ""


def test_dry_run_names_the_reference(write_config, capsys, fmnist_dir):
    cfg = minimal_config(eval={"embedders": ["pixels"], "metrics": ["fd"], "num_real": 150})
    cfg["data"]["datasets"].append({"name": "fm", "source": "fashion_mnist", "split": "train",
                                    "path": str(fmnist_dir), "resolution": 16})
    assert run.main([str(write_config(cfg)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("  digits: held-out share 0.1 of digits (data seed 0), 150 images "
            "(cap eval.num_real = 150)") in out.splitlines()
    assert "  fm: fashion_mnist split 'test', 50 images (cap eval.num_real = 150)" in out


def _frechet64(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance in float64 (independent of eval/): tr sqrt(Ca Cb) as the sum of the
    square roots of the eigenvalues of the symmetric Ca^1/2 Cb Ca^1/2 (numpy ``eigh``).

    First both sets are rotated onto an orthonormal basis of the span of all their rows
    (QR): a rotation leaves the distance unchanged, and no point has a component outside
    that span, so dropping it is exact; D shrinks from the pixel embedder's 3072 to at
    most ``len(a) + len(b)`` (the 3072-dim eigendecompositions took 21 s of this test).
    Not ``scipy.linalg.sqrtm(Ca @ Cb)``: it ran for minutes (2026-12-06, inside pytest)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    q, _ = np.linalg.qr(np.concatenate([a, b]).T)   # (D, len(a) + len(b)) orthonormal columns
    a, b = a @ q, b @ q
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * tr_covmean)


@pytest.mark.e2e
def test_metrics_compare_against_the_reference_not_the_training_set():
    from models import build_embedder
    from orchestrator.config import EvalConfig
    from orchestrator.training.evaluate import evaluate

    rng = np.random.default_rng(0)
    emb = build_embedder("pixels")
    train_img = rng.integers(0, 128, (80, 4, 4, 3), dtype=np.uint8)   # 3072 pixel features
    ref_img = rng.integers(100, 256, (60, 4, 4, 3), dtype=np.uint8)
    fake_img = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    train, ref, fake = emb(train_img), emb(ref_img), emb(fake_img)
    ec = EvalConfig(embedders=("pixels",), primary="pixels", metrics=("fd", "memorization"),
                    num_real=60)
    m = evaluate(fake_img, {"pixels": train}, np.zeros(80, np.int64), np.arange(40), ec, seed=0,
                 num_classes=0, device="cpu", reference={"pixels": ref})
    assert m["fd_pixels"] == pytest.approx(_frechet64(ref, fake), rel=1e-3)
    assert abs(m["fd_pixels"] - _frechet64(train, fake)) > 0.1 * _frechet64(train, fake)
    # memorization: nearest training image of each sample (L2-normalized features), to the
    # full training set and to the trial's subset
    def unit(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    dist = np.sqrt(((unit(fake)[:, None] - unit(train)[None]) ** 2).sum(-1))
    d_full, d_sub = dist.min(1), dist[:, :40].min(1)
    assert m["mem_nn_mean_pixels"] == pytest.approx(d_full.mean(), rel=1e-4)
    assert m["mem_subset_nn_mean_pixels"] == pytest.approx(d_sub.mean(), rel=1e-4)
    with pytest.raises(ValueError, match="reference features of shape"):
        evaluate(fake_img, {"pixels": train}, np.zeros(80, np.int64), np.arange(40), ec, seed=0,
                 num_classes=0, device="cpu", reference={"pixels": ref[:0]})


def test_trial_key_params_and_report_header_name_the_reference():
    from orchestrator.config import load_config
    from orchestrator.stages.report import reference_header
    from orchestrator.stages.score import DatasetArtifacts
    from orchestrator.stages.sweep import trial_key
    from orchestrator.storage.cache import ArtifactCache
    from orchestrator.training.records import TrialSpec
    from tests.pipeline_helpers import SMOKE

    cfg = load_config(SMOKE, check=False)
    cache = ArtifactCache("/nonexistent-cache")
    art = DatasetArtifacts("fmnist", "fp", 10, "vqvae/x", "latents/x",
                           {"pixels": "embed/x", "classifier": "embed/c"}, None,
                           {"classifier": {"weights": "classifier/w"}},
                           {"pixels": "reference/a", "classifier": "reference/c"},
                           "fashion_mnist split 'test'", 200)
    trial = list(TrialPlan.from_config(cfg))[0]
    k1 = trial_key(cache, cfg, trial, art, "subset/a")
    other = replace(art, reference={"pixels": "reference/b", "classifier": "reference/c"})
    assert k1 != trial_key(cache, cfg, trial, other, "subset/a")
    spec_json = {"key": k1, "cache_root": "/c", "run_name": "r",
                 "trial": {"dataset": "fmnist", "method": "full", "ratio": 0.0, "seed": 0},
                 "params": {"reference_origin": art.reference_origin, "reference_size": 200},
                 "inputs": {"latents": "l", "subset": "s", "vqvae": "v", "features": {"pixels": "f"},
                            "reference": {"pixels": "reference/a"}},
                 "conditional": True, "num_classes": 10, "model": {}, "train": {},
                 "sample": {}, "eval": {"metrics": ["fd"], "embedders": ["pixels"],
                                        "primary": "pixels", "classifier": {}}}
    spec = TrialSpec.from_json(spec_json)
    assert spec.inputs.reference == {"pixels": "reference/a"}
    assert TrialSpec.from_json(spec.to_json()) == spec
    header = reference_header([spec])
    assert "- reference of fmnist: fashion_mnist split 'test', 200 images" in header
    assert not any(line.startswith("| ") for line in header.splitlines())
