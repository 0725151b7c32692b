"""The executor (orchestrator/runtime/executor.py): the local one runs tasks and trials in
this process (unit tier), and a trial's result is the same on the Ray one (ray tier)."""

from __future__ import annotations

import posixpath
import shutil
import tempfile

import pytest
import torch

from orchestrator.runtime.executor import LocalExecutor, TrialJobs
from orchestrator.runtime.ray_executor import RayExecutor
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.loop import LocalRuntime
from orchestrator.training.records import TrialResult, TrialSpec
from orchestrator.training.trial import run_trial
from tests.test_tune_resume import trial_spec

PLAN = ResourcePlan(total_cpus=2, total_gpus=0, num_workers=1, worker_cpus=0.9, worker_gpus=0,
                    trial_cpus=0.05, max_concurrent_trials=1, actor_pool_size=1, actor_cpus=0.9,
                    actor_gpus=0, torch_threads=1)


def _jobs(spec: TrialSpec, storage: str, *more: tuple[str, str], live=None) -> TrialJobs:
    cache = ArtifactCache(spec.cache_root)
    key = ArtifactCache.key("trialspec", 0, trial=spec.key)
    cache.save_json(key, spec.to_json())
    return TrialJobs(jobs=((spec.run_name, key), *more), cache_root=spec.cache_root,
                     storage=storage, experiment=(storage, "t"), max_failures=1, live=live)


def _result(spec: TrialSpec) -> TrialResult:
    return TrialResult.from_json(ArtifactCache(spec.cache_root).load_json(spec.key))


def test_local_tasks_run_in_order_here():
    assert LocalExecutor().run_tasks(posixpath.join, [("a", "b"), ("c", "d")], "join") == ["a/b", "c/d"]


def test_local_trials_match_a_direct_run_and_a_failure_is_reported(tmp_path, one_torch_thread):
    ref, spec = trial_spec(str(tmp_path / "ref")), trial_spec(str(tmp_path / "local"))
    reference = run_trial(ref, LocalRuntime())
    broken = ArtifactCache.key("trialspec", 0, trial="broken")
    bad = TrialSpec.from_json({**spec.to_json(), "key": "trial/broken", "run_name": "broken"})
    bad_inputs = {**bad.to_json()["inputs"], "latents": "latents/missing"}
    ArtifactCache(spec.cache_root).save_json(broken, {**bad.to_json(), "inputs": bad_inputs})
    storage = str(tmp_path / "trials")
    errors = LocalExecutor(device="cpu").run_trials(_jobs(spec, storage, ("broken", broken)))
    assert list(errors) == [broken] and errors[broken]   # names the failure, the sweep went on
    got = _result(spec)
    assert got.metrics == reference.metrics and got.loss_curve == reference.loss_curve
    assert got.node_id is None


def test_local_trials_open_their_mlflow_run_and_log_the_loss_live(tmp_path, one_torch_thread):
    """The local executor feeds the live MLflow runs as the Tune callback does: the run opens
    at the start (final = false), every report's loss is logged at its step, and it ends
    FINISHED, one run per trial."""
    from orchestrator.tracking import MlflowReporter
    from orchestrator.tracking.live import live_logger

    spec = trial_spec(str(tmp_path / "c"))
    reporter = MlflowReporter(f"sqlite:///{tmp_path / 'm.db'}", "live-local",
                              str(tmp_path / "art"), "cafe", "sweep")
    live = live_logger(reporter, [spec])
    assert LocalExecutor(device="cpu").run_trials(
        _jobs(spec, str(tmp_path / "t"), live=live)) == {}
    (run,) = reporter.client.search_runs(
        [reporter.experiment_id], f"tags.`mlflow.parentRunId` = '{reporter.parent_id}'")
    assert run.data.tags["prunediff.trial_key"] == spec.key
    assert run.info.status == "FINISHED" and run.data.tags["prunediff.final"] == "false"
    history = sorted((m.step, m.value) for m in
                     reporter.client.get_metric_history(run.info.run_id, "train_loss"))
    assert history == sorted((int(s), pytest.approx(v)) for s, v in _result(spec).loss_curve)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_trial_gives_the_same_result_on_both_executors(tmp_path, monkeypatch, one_torch_thread):
    import ray

    local, on_ray = trial_spec(str(tmp_path / "local")), trial_spec(str(tmp_path / "ray"))
    assert LocalExecutor(device="cpu").run_trials(_jobs(local, str(tmp_path / "lt"))) == {}
    monkeypatch.setenv("RAY_ADDRESS", "local")
    ray_tmp = tempfile.mkdtemp(prefix="ex", dir="/tmp")   # socket paths <= 107 chars
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        assert RayExecutor(PLAN).run_trials(_jobs(on_ray, str(tmp_path / "rt"))) == {}
        assert RayExecutor(PLAN).run_tasks(posixpath.join, [("a", "b"), ("c", "d")], "join") == ["a/b", "c/d"]
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    a, b = _result(local), _result(on_ray)
    assert a.metrics == b.metrics and a.loss_curve == b.loss_curve
    assert b.node_id is not None and a.node_id is None
    assert torch.get_num_threads() == 1


def test_local_executor_refuses_several_workers_and_unknown_executors(write_config, capsys):
    from orchestrator.run import main
    from tests.conftest import minimal_config

    raw = minimal_config(resources={"executor": "local", "num_workers": 2})
    assert main([str(write_config(raw)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resources.num_workers: the local executor runs one worker" in err[0]
    assert main([str(write_config(minimal_config(resources={"executor": "dask"}))),
                 "--dry-run"]) == 2
    assert "resources.executor: 'dask' is not one of ray, local" in capsys.readouterr().err
