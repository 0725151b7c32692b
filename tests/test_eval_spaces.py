"""Evaluation spaces: the trained classifier space (split, accuracy, cached file) and the
report's per-space header and verdicts on the primary space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.config import ClassifierConfig, config_from_dict
from tests.conftest import minimal_config


def test_classifier_split_is_seeded_disjoint_and_complete():
    from orchestrator.training.spaces import classifier_split

    train, test = classifier_split(101, 0.1, seed=3)
    assert len(test) == 10 and len(train) == 91
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(101))
    again = classifier_split(101, 0.1, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(classifier_split(101, 0.1, seed=4)[1], test)
    assert [len(x) for x in classifier_split(2, 0.01, 0)] == [1, 1]   # at least one each
    with pytest.raises(ValueError, match="at least 2"):
        classifier_split(1, 0.5, 0)


def test_fit_classifier_reports_the_accuracy_of_its_saved_file_on_held_out_rows(tmp_path):
    """The stored accuracy is recomputed from the saved bytes on the held-out rows only."""
    import torch
    from sklearn.datasets import load_digits

    from models.classifier import load_classifier
    from orchestrator.storage.cache import ArtifactCache
    from orchestrator.training.spaces import classifier_split, fit_classifier, local_weights

    d = load_digits()
    gray = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)          # (N, 8, 8)
    images, labels = np.repeat(gray[..., None], 3, axis=-1), d.target.astype(np.int64)
    cc = ClassifierConfig(steps=120, batch_size=64, test_share=0.2, seed=1)
    blob, info = fit_classifier(images, labels, 10, cc)
    _, test = classifier_split(len(images), cc.test_share, cc.seed)
    assert (info["n_test"], info["n_train"]) == (len(test), len(images) - len(test))
    cache = ArtifactCache(str(tmp_path / "cache"))
    key = cache.key("classifier", 1, t="x")
    cache.save_bytes(key, blob)
    with local_weights(cache, {"classifier": key}) as paths:
        model = load_classifier(paths["classifier"])
    with torch.no_grad():
        x = torch.from_numpy(images[test]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pred = model(x).argmax(1).numpy()
    assert info["test_accuracy"] == pytest.approx(float((pred == labels[test]).mean()), abs=1e-12)
    assert info["test_accuracy"] > 0.5          # 10 classes: chance is 0.1


def _cfg(tmp_path, **ev):
    raw = minimal_config(eval={"metrics": ["fd"], **ev})
    return config_from_dict(raw, base_dir=tmp_path)


def _trials(metric: str) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        rows.append({"dataset": "digits", "method": "full", "ratio": 0.0, "seed": seed,
                     metric: 10.0 + seed})
        for method, base in (("random", 30.0), ("clustering", 12.0)):
            rows.append({"dataset": "digits", "method": method, "ratio": 0.9, "seed": seed,
                         metric: base + 0.1 * seed})
    return pd.DataFrame(rows)


def test_verdicts_test_the_primary_fd_and_mark_methods_selecting_in_it(tmp_path):
    from orchestrator.stages.report import verdicts_markdown

    cfg = _cfg(tmp_path, embedders=["pixels", "classifier"], primary="pixels")
    text = verdicts_markdown(cfg, _trials("fd_pixels"))
    assert "(a) quality at ratios >= 0.75 vs full data (fd_pixels)" in text
    assert "| clustering † | 0.90 |" in text and "| random | 0.90 |" in text
    assert "selected its subset in the feature space of fd_pixels" in text
    # the classifier space is primary: no method selects there, nothing is marked
    cfg = _cfg(tmp_path, embedders=["pixels", "classifier"], primary="classifier")
    text = verdicts_markdown(cfg, _trials("fd_cls"))
    assert "(fd_cls)" in text and "†" not in text
    # the primary metric is missing: one line says why, no crash
    assert "not computed: trials: no column fd_cls" in verdicts_markdown(cfg, _trials("fd_pixels"))


def test_verdict_c_uses_the_primary_spaces_coverage(tmp_path):
    from orchestrator.stages.report import verdicts_markdown

    cfg = _cfg(tmp_path, embedders=["pixels"], metrics=["fd", "cluster_coverage"])
    df = _trials("fd_pixels").assign(cov_kl_uniform_pixels=lambda d: d["fd_pixels"] / 100)
    df.loc[df["method"] == "clustering", "method"] = "clustering_balanced"
    text = verdicts_markdown(cfg, df)
    assert "(cov_kl_uniform_pixels) at ratios: 0.90" in text   # balanced significantly lower


def test_report_header_names_spaces_accuracy_and_circular_methods(tmp_path):
    from types import SimpleNamespace

    from orchestrator.config import Trial
    from orchestrator.stages.report import space_header

    cfg = _cfg(tmp_path, embedders=["classifier", "pixels"])
    spec = SimpleNamespace(trial=Trial("digits", "full", 0.0, 0),
                           params={"classifier_test_accuracy": 0.8765, "classifier_test_images": 20})
    head = space_header(cfg, [spec])
    assert "- Evaluation spaces: classifier, pixels; primary (verdicts): classifier." in head
    assert "Classifier space (digits): test accuracy 0.8765 on 20 held-out" in head
    assert "- Warning: method clustering selects in evaluation space pixels" in head
