"""``--fresh`` end to end, and the proxy resuming from its checkpoint in Ray storage.

One small smoke.yaml variant (el2n only: one trial, and the proxy is needed) in a
private cache, seeded with the session's shared smoke artifacts up to the features
(VQ-VAE, latents, classifier, features, reference), three CLI runs:

1. a first run trains the proxy (one Ray task, checkpointing to its run folder in Ray
   storage), scores, selects and trains the trial;
2. the proxy statistics are deleted and the same command rerun: every other artifact
   is reused untouched, and the proxy continues from its last checkpoint in Ray
   storage (the final step) with the same statistics, without training again;
3. ``--fresh`` on the local executor (artifacts are the same on both; ``--fresh`` is the
   driver's): every artifact is rewritten, the proxy starts from step 0 (the first
   run's checkpoints are deleted, so nothing resumes), the trial is trained again,
   MLflow gets a new sweep run.
"""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline_helpers import cli, needs_fmnist, shared_cache, trial_records

PROXY_STEPS = 20   # smoke.yaml's proxy.steps: the last checkpoint
# the cache kinds this test builds (the rest comes from the shared smoke cache)
DOWNSTREAM = {"proxy", "proxyshard", "score", "subset", "trainnn", "centroids", "trial",
              "trialspec", "trialgrid"}


def _artifacts(cache: Path) -> dict[str, tuple[int, int]]:
    """Cache data files by path -> (inode, mtime): an atomic rewrite changes both."""
    out = {}
    for p in cache.rglob("*"):
        if p.is_file() and p.suffix != ".sha256" and ".tmp-" not in p.name:
            st = p.stat()
            out[str(p.relative_to(cache))] = (st.st_ino, st.st_mtime_ns)
    return out


def _proxy_files(cache: Path) -> tuple[Path, Path]:
    (arrays,) = (cache / "proxy").glob("*.npz")
    return arrays, arrays.with_suffix(".json")


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _sweep_runs(tracking_uri: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("fresh")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return sum(r.data.tags.get("prunediff.role") == "sweep" for r in runs)


@pytest.mark.ray
@pytest.mark.timeout(2400)
@needs_fmnist
def test_fresh_rebuilds_everything_and_rerun_resumes_proxy(tmp_path, tmp_path_factory):
    cache, out = tmp_path / "cache", tmp_path / "out"
    shutil.copytree(shared_cache(tmp_path_factory), cache,
                    ignore=lambda d, names: [n for n in names if n in DOWNSTREAM])
    args = ["experiments/smoke.yaml", "--set", "experiment.name=fresh",
            "--set", f"experiment.output_dir={out}", "--set", f"storage.cache_dir={cache}",
            "--set", "pruning.methods=[{name: el2n}]", "--set", "pruning.baseline=false",
            "--set", "train.steps=10", "--set", "train.checkpoint_every=5",
            "--set", "train.log_every=5", "--set", "sample.num_samples=16"]

    first = cli(args, timeout=1200)
    text = first.stdout + first.stderr
    assert first.returncode == 0, text[-4000:]
    arrays, record = _proxy_files(cache)
    assert json.loads(record.read_text())["resumed_from_step"] == 0
    stats = _load(arrays)
    # the statistic and its two halves (split-half reliability: pruning/stats_halves.py)
    assert set(stats) == {"loss_last", "loss_last_half_a", "loss_last_half_b"}
    assert stats["loss_last"].shape == (400, 1)
    ckpts = glob.glob(str(out / "ray_results" / "proxy-fmnist-*" / "checkpoint_*" / "rank0.pt"))
    assert ckpts, "the proxy wrote no checkpoint"
    (trial,) = trial_records(cache).values()
    before = _artifacts(cache)

    # Killed after the proxy finished, before its statistics were merged: the rerun
    # takes them from the proxy's last checkpoint; nothing else is rebuilt.
    arrays.unlink()
    Path(str(arrays) + ".sha256").unlink()
    second = cli(args, timeout=1200)
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-4000:]
    assert f"proxy[fmnist]: resumed from the checkpoint at step {PROXY_STEPS}" in text, text[-4000:]
    assert "VQ-VAE cached" in text and "latents cached" in text and "embed[fmnist/pixels]: cached" in text
    assert "1 already done, 0 to run" in text
    assert json.loads(record.read_text())["resumed_from_step"] == PROXY_STEPS
    for key, value in stats.items():
        np.testing.assert_allclose(_load(arrays)[key], value, rtol=0, atol=0, err_msg=key)
    reused = _artifacts(cache)
    changed = {k for k in before if reused.get(k) != before[k]}
    assert changed == {f"proxy/{arrays.name}", f"proxy/{record.name}"}, sorted(changed)
    assert trial_records(cache) == {trial["key"]: trial}
    tracking = f"sqlite:///{out}/mlflow.db"
    assert _sweep_runs(tracking) == 1

    third = cli([*args, "--set", "resources.executor=local", "--fresh"], timeout=1200)
    text = third.stdout + third.stderr
    assert third.returncode == 0, text[-4000:]
    assert "--fresh: rebuilding everything" in text
    assert "training VQ-VAE" in text and "0 already done, 1 to run" in text
    for line in ("VQ-VAE cached", "latents cached", "pixels]: cached", "statistics cached"):
        assert line not in text, f"--fresh reused an artifact: {line!r}"
    assert "resumed from the checkpoint" not in text, "--fresh resumed the old proxy run"
    # (its checkpoints deleted: a kept one would have been resumed from, and the proxy's
    # record would say so)
    assert json.loads(record.read_text())["resumed_from_step"] == 0
    after = _artifacts(cache)
    kept = sorted(k for k in reused if after.get(k) == reused[k])
    assert not kept, f"--fresh left these artifacts as they were: {kept}"
    (retrained,) = trial_records(cache).values()
    assert retrained["key"] == trial["key"] and retrained["finished_at"] > trial["finished_at"]
    assert retrained["resumed_from_step"] == 0
    assert _sweep_runs(tracking) == 2
