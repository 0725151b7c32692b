"""The evaluation classifier: learns a toy task, seeds, save/load, the "classifier" embedder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import EMBEDDERS, MissingWeightsError, build_embedder
from models.classifier import (ClassifierNet, classifier_accuracy, load_classifier, predict_classes,
                               save_classifier, train_classifier)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = dict(width=8, feature_dim=16)


def shapes(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 toy images of 3 classes and their (n,) int64 labels.

    0: a horizontal bar, 1: a vertical bar, 2: a filled square; random position,
    colour and background noise.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    imgs = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for img, lab in zip(imgs, labels):
        r, c = rng.integers(2, size - 6, 2)
        colour = rng.integers(150, 256, 3).astype(np.uint8)
        if lab == 0:
            img[r:r + 2, 1:size - 1] = colour
        elif lab == 1:
            img[1:size - 1, c:c + 2] = colour
        else:
            img[r:r + 5, c:c + 5] = colour
    return imgs, labels.astype(np.int64)


@pytest.fixture(scope="module")
def trained() -> ClassifierNet:
    torch.set_num_threads(1)
    imgs, labels = shapes(300, seed=0)
    return train_classifier(imgs, labels, 3, steps=60, batch_size=32, lr=3e-3, seed=0, **SMALL)


def test_learns_a_separable_toy_task(trained: ClassifierNet) -> None:
    imgs, labels = shapes(200, seed=1)
    assert classifier_accuracy(trained, imgs, labels) >= 0.95
    assert not trained.training and trained.config == {
        "num_classes": 3, "width": 8, "feature_dim": 16, "resolution": 16}


def test_features_shape_dtype_and_any_input_size(tmp_path: Path, trained: ClassifierNet) -> None:
    path = tmp_path / "cls.pt"
    save_classifier(trained, path)
    emb = build_embedder("classifier", weights=str(path))
    imgs, _ = shapes(5, seed=2)
    out = emb(imgs)
    assert out.shape == (5, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert emb.dim == 16 and emb.short == "cls" and emb.name == "classifier"
    big = np.repeat(np.repeat(imgs, 2, axis=1), 2, axis=2)  # 32x32: resized back to 16
    assert emb(big).shape == (5, 16)
    assert emb(imgs[:0]).shape == (0, 16)


def test_save_load_round_trip_is_bit_identical(tmp_path: Path, trained: ClassifierNet) -> None:
    path = tmp_path / "cls.pt"
    save_classifier(trained, path)
    loaded = load_classifier(path)
    assert loaded.config == trained.config
    for (k, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    imgs, _ = shapes(40, seed=3)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        direct = trained.features(x).numpy()
    np.testing.assert_array_equal(build_embedder("classifier", weights=str(path))(imgs), direct)
    assert EMBEDDERS["classifier"].short == "cls"


def test_same_seed_same_weights_other_seed_different() -> None:
    imgs, labels = shapes(64, seed=4)

    def weights(seed: int) -> list[torch.Tensor]:
        net = train_classifier(imgs, labels, 3, steps=4, batch_size=16, seed=seed, **SMALL)
        return list(net.state_dict().values())

    a, b, c = weights(7), weights(7), weights(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c) if x.is_floating_point())
    # The initialization alone already differs between seeds.
    w0 = ClassifierNet(3, seed=0).body[0][0].weight
    assert torch.equal(w0, ClassifierNet(3, seed=0).body[0][0].weight)
    assert not torch.equal(w0, ClassifierNet(3, seed=1).body[0][0].weight)


def test_missing_or_wrong_weights(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="trains one classifier per dataset"):
        build_embedder("classifier")
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        build_embedder("classifier", weights=str(tmp_path / "nope.pt"))
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_classifier"):
        load_classifier(tmp_path / "other.pt")


def test_bad_training_input_is_rejected() -> None:
    imgs, labels = shapes(8, seed=5)
    with pytest.raises(ValueError, match="labels must lie"):
        train_classifier(imgs, labels + 3, 3, steps=1)
    with pytest.raises(ValueError, match="square"):
        train_classifier(imgs[:, :10], labels, 3, steps=1)
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierNet(1)


def test_predict_is_the_arg_max_of_the_logits(tmp_path: Path, trained: ClassifierNet) -> None:
    """The embedder's predict (claim (c)'s labeller) = arg-max of the network's own logits,
    at any input size; on held-out toy images it agrees with the labels as accuracy says."""
    path = tmp_path / "cls.pt"
    save_classifier(trained, path)
    emb = build_embedder("classifier", weights=str(path))
    imgs, labels = shapes(40, seed=5)
    with torch.no_grad():
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        want = trained(x).argmax(1).numpy()
    got = emb.predict(imgs)
    assert got.dtype == np.int64 and got.shape == (40,)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(predict_classes(trained, imgs, batch_size=7), want)
    assert (got == labels).mean() == classifier_accuracy(trained, imgs, labels)
    big = np.repeat(np.repeat(imgs, 2, axis=1), 2, axis=2)       # 32 px: resized to 16
    assert emb.predict(big).shape == (40,)
