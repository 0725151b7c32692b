"""A single-worker trial runs inside its Tune trainable (``runtime.tune.TuneRuntime``):
a failure after a checkpoint is restarted by Tune's ``FailureConfig`` from Tune's own
checkpoint, and the trial ends bit-identical to an uninterrupted in-process run.

(A killed driver, rerun, is ``tests/test_resume.py``: trials resume from their run
folders; a killed DDP worker and the rerun of its sweep: the worker-kill drill.)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np
import pytest
import torch

from orchestrator.config import EvalConfig, ModelConfig, SampleConfig, TrainConfig, Trial
from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.records import TrialInputs, TrialSpec
from tests.table_helpers import save_table

STEPS, FAIL_AT = 20, 10


def trial_spec(root: str) -> TrialSpec:
    """A tiny trial (DiT-Micro on random latents, pixels features) with its inputs cached."""
    from models import build_vqvae
    from models.vqvae import save_vqvae

    cache = ArtifactCache(root)
    rng = np.random.default_rng(0)
    n = 48
    lat, sub, feats, vq, ref = (ArtifactCache.key(kind, 0, t="tune")
                                for kind in ("latents", "subset", "embed", "vqvae", "reference"))
    save_table(cache, lat, latent=rng.standard_normal((n, 4, 8, 8)).astype(np.float32),
               label=(np.arange(n) % 3).astype(np.int64))
    cache.save_arrays(sub, indices=np.arange(0, n, 2, dtype=np.int64),
                      ids=np.arange(0, n, 2, dtype=np.int64))
    save_table(cache, feats, features=rng.random((n, 3 * 32 * 32)).astype(np.float32))
    save_table(cache, ref, label=(np.arange(24) % 3).astype(np.int64),
               features=rng.random((24, 3 * 32 * 32)).astype(np.float32))   # held-out stand-in
    path = os.path.join(root, "vq.pt")
    save_vqvae(build_vqvae("vq-f4-c4"), path, "vq-f4-c4")
    with open(path, "rb") as f:
        cache.save_bytes(vq, f.read())
    return TrialSpec(key=ArtifactCache.key("trial", 0, t="tune"), cache_root=root,
                     run_name="tune-resume", trial=Trial("fake", "random", 0.5, 0),
                     params={}, inputs=TrialInputs(lat, sub, vq, {"pixels": feats},
                                                   reference={"pixels": ref}), conditional=True,
                     num_classes=3, model=ModelConfig("DiT-Micro/2"),
                     train=TrainConfig(steps=STEPS, batch_size=8, checkpoint_every=5, log_every=5),
                     sample=SampleConfig(num_samples=16, steps=2, method="euler", batch_size=16),
                     eval=EvalConfig(embedders=("pixels",), primary="pixels", metrics=("fd", "vendi"),
                                     num_real=24),
                     eval_weights={})


def flaky_trial(config: dict) -> None:
    """The sweep's solo trial, failing once right after its step-FAIL_AT checkpoint.

    Before failing it deletes the run folder, so the restart can only resume from
    Tune's checkpoint.
    """
    from orchestrator.runtime.tune import TuneRuntime
    from orchestrator.training.trial import run_trial

    class Flaky(TuneRuntime):
        def save_checkpoint(self, metrics, files):
            super().save_checkpoint(metrics, files)
            if files and metrics["step"] == FAIL_AT and not os.path.exists(config["marker"]):
                open(config["marker"], "w").close()
                shutil.rmtree(self.run_dir)
                raise RuntimeError("injected failure after a checkpoint")

    torch.set_num_threads(1)
    torch.manual_seed(0)   # the DiT's initial weights come from torch's global generator
    run_trial(TrialSpec.from_json(config["spec"]), Flaky(config["run_dir"]))


def _state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_solo_trial_resumes_from_tune_checkpoint_bit_identical(tmp_path, monkeypatch):
    import ray
    from ray import tune

    from orchestrator.runtime.tune import run_checkpoints
    from orchestrator.training.loop import LocalRuntime
    from orchestrator.training.trial import STATE_FILE, run_trial

    ref_root, tune_root = str(tmp_path / "ref"), str(tmp_path / "tune")
    ref_spec, spec = trial_spec(ref_root), trial_spec(tune_root)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = LocalRuntime()
        torch.manual_seed(0)
        reference = run_trial(ref_spec, local)
    finally:
        torch.set_num_threads(prev)

    monkeypatch.setenv("RAY_ADDRESS", "local")
    ray_tmp = tempfile.mkdtemp(prefix="tr", dir="/tmp")   # socket paths <= 107 chars
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    # The workers cannot import this test module (pytest put tests/ on the driver's
    # sys.path only): pickle flaky_trial by value.
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[flaky_trial.__module__])
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        run_dir = str(tmp_path / "trials" / spec.run_name)
        tuner = tune.Tuner(
            tune.with_resources(flaky_trial, {"CPU": 1}),
            param_space={"spec": spec.to_json(), "run_dir": run_dir,
                         "marker": str(tmp_path / "failed-once")},
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune_results"), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        results = tuner.fit()
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[flaky_trial.__module__])
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (tmp_path / "failed-once").exists(), "the failure was never injected"
    assert not results.errors, results.errors
    from orchestrator.training.records import TrialResult

    got = TrialResult.from_json(ArtifactCache(tune_root).load_json(spec.key))
    assert got.resumed_from_step == FAIL_AT          # from Tune's checkpoint (run folder was gone)
    assert reference.resumed_from_step == 0
    assert got.loss_curve == reference.loss_curve    # same floats, not approximately
    assert got.metrics == reference.metrics
    # the final checkpoints hold the same weights, EMA and optimizer state, bit for bit
    final = run_checkpoints(run_dir)[-1]
    mine = _state(os.path.join(final, STATE_FILE))
    theirs = local.checkpoints[-1][1][STATE_FILE]
    assert mine["step"] == theirs["step"] == STEPS
    assert mine["ema"]["num_updates"] == theirs["ema"]["num_updates"]
    for part, a, b in (("model", mine["model"], theirs["model"]),
                       ("ema", mine["ema"]["module"], theirs["ema"]["module"])):
        assert a.keys() == b.keys()
        for name, value in b.items():
            assert torch.equal(a[name], value), f"{part}.{name} differs"
    assert len(run_checkpoints(run_dir)) == 2        # older ones pruned


def test_solo_trials_ask_for_their_workers_share():
    """One worker: the Tune trial asks for the worker's CPUs itself and the concurrent
    trials still fit the cluster; two workers: a sliver (the TorchTrainer asks the rest)."""
    from orchestrator.config.schema import ResourcesConfig
    from orchestrator.runtime.resources import plan_resources
    from orchestrator.runtime.trials import trial_resources

    for cpus in (2.0, 3.0, 16.0):
        one = plan_resources(ResourcesConfig(num_workers=1), {"CPU": cpus})
        ask = trial_resources(one)
        assert ask == {"CPU": round(one.worker_cpus + one.trial_cpus, 2)}
        assert one.max_concurrent_trials * ask["CPU"] <= cpus
        two = plan_resources(ResourcesConfig(num_workers=2), {"CPU": cpus})
        assert trial_resources(two) == {"CPU": two.trial_cpus}
    gpu = plan_resources(ResourcesConfig(num_workers=1, use_gpu=True), {"CPU": 8.0, "GPU": 1.0},
                         [{"CPU": 8.0, "GPU": 1.0}])
    assert trial_resources(gpu)["GPU"] == 1.0


class _Cut(Exception):
    pass


def cut_and_resume(tmp_path, runtime_cls: type) -> tuple:
    """A trial cut right after its step-FAIL_AT checkpoint, then rerun on a fresh
    ``runtime_cls(run_dir, device="cpu")``: checks it resumed from its run folder and matches an
    uncut run bit for bit; returns the rerun's runtime and result."""
    from orchestrator.training.loop import LocalRuntime
    from orchestrator.training.records import TrialResult
    from orchestrator.training.run_folder import run_checkpoints
    from orchestrator.training.trial import run_trial

    ref_spec, spec = trial_spec(str(tmp_path / "ref")), trial_spec(str(tmp_path / "cut"))
    torch.manual_seed(0)
    reference = run_trial(ref_spec, LocalRuntime())
    run_dir = str(tmp_path / "trials" / spec.run_name)

    class Cut(runtime_cls):
        def save_checkpoint(self, metrics, files):
            super().save_checkpoint(metrics, files)
            if files and metrics["step"] == FAIL_AT:
                raise _Cut

    torch.manual_seed(0)
    with pytest.raises(_Cut):
        run_trial(spec, Cut(run_dir, device="cpu"))
    assert [int(p.rsplit("_", 1)[1]) for p in run_checkpoints(run_dir)] == [5, 10]
    torch.manual_seed(123)   # the resumed run takes nothing from the global generator
    runtime = runtime_cls(run_dir, device="cpu")
    run_trial(spec, runtime)
    got = TrialResult.from_json(ArtifactCache(spec.cache_root).load_json(spec.key))
    assert got.resumed_from_step == FAIL_AT and reference.resumed_from_step == 0
    assert got.loss_curve == reference.loss_curve
    assert got.metrics == reference.metrics
    assert [int(p.rsplit("_", 1)[1]) for p in run_checkpoints(run_dir)] == [15, 20]
    return runtime, got


def test_solo_trial_resumes_from_its_run_folder_bit_identical(tmp_path, monkeypatch, one_torch_thread):
    """A driver killed after a checkpoint (new Tune experiment: no Tune checkpoint): the
    rerun resumes from the run folder. Tune's report/get_checkpoint are stubbed, no cluster."""
    from ray import tune

    from orchestrator.runtime.tune import TuneRuntime

    reports: list = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    cut_and_resume(tmp_path, TuneRuntime)
    assert reports[-1]["trial_finished"] == 1


def test_run_checkpoints_skips_a_folder_without_its_completion_marker(tmp_path):
    """A copy cut short (no marker: object stores cannot rename a folder) is not resumed from."""
    from orchestrator.training.run_folder import COMPLETE as _COMPLETE, run_checkpoints

    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint_{step:09d}"
        folder.mkdir()
        (folder / "model.pt").write_bytes(b"x")
        if complete:
            (folder / _COMPLETE).write_bytes(b"")
    assert [int(p.rsplit("_", 1)[1]) for p in run_checkpoints(str(tmp_path))] == [5, 10]
