"""smoke.yaml end to end in-process: table, MLflow runs and artifacts, cache reuse,
and no CPUs left reserved in Ray after the run (placement groups, Train controllers)."""

from __future__ import annotations

import math

import pytest

from tests.pipeline_helpers import (SMOKE, assert_complete_table, needs_fmnist, shared_cache,
                                    smoke_overrides, trial_records)


def _mlflow_runs(tracking_uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, runs


def _leaked_cpus(wait_s: float = 60.0) -> str:
    """'' once every CPU of the cluster is free again (placement groups of the VQ-VAE,
    proxy and trial runs removed, no Train controller left holding workers), else what
    still holds CPUs after ``wait_s`` (Ray removes finished runs' groups asynchronously)."""
    import time

    import ray
    from ray.util import placement_group_table

    deadline = time.time() + wait_s
    while True:
        total = ray.cluster_resources().get("CPU", 0.0)
        free = ray.available_resources().get("CPU", 0.0)
        if total > 0 and abs(free - total) < 1e-6:
            return ""
        if time.time() > deadline:
            groups = {pid: (pg.get("name"), pg["state"], pg.get("bundles"))
                      for pid, pg in placement_group_table().items() if pg["state"] != "REMOVED"}
            actors = [a["ActorClassName"] for a in ray._private.state.actors().values()
                      if a["State"] == "ALIVE"]
            return (f"{free} of {total} CPUs available; placement groups {groups}; "
                    f"live actors {actors}")
        time.sleep(1.0)


@pytest.mark.e2e
@pytest.mark.timeout(1200)
@needs_fmnist
def test_smoke_end_to_end_in_process(tmp_path, tmp_path_factory, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "local")   # our own Ray, not another session's head
    from orchestrator.config import load_config
    from orchestrator.pipeline import run_pipeline
    from orchestrator.runtime.cluster import init_ray

    cache = shared_cache(tmp_path_factory)
    cfg = load_config(SMOKE, smoke_overrides(tmp_path / "out", cache))
    # Ray started here (as run_pipeline would) stays up after the run: check for leaks.
    init_ray()
    try:
        rc = run_pipeline(cfg, fresh=False)
        leaked = _leaked_cpus()
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert not leaked, f"after the run: {leaked}"
    assert_complete_table(out)
    head = [c.strip() for c in next(ln for ln in out.splitlines()
                                    if ln.startswith("| dataset |")).strip("|").split("|")]
    assert {"fd_cls", "fd_pixels", "precision_cls", "precision_pixels"} <= set(head), head
    assert "primary (verdicts): classifier" in out and "Classifier space (fmnist): test accuracy" in out
    assert "method clustering_balanced selects in evaluation space pixels" in out
    assert f"mlflow ui --backend-store-uri {cfg.mlflow.tracking_uri} --host 127.0.0.1" in out
    report = tmp_path / "out" / "report"
    for name in ("results.csv", "results.md", "ratio_random.png", "ratio_el2n.png"):
        assert (report / name).is_file(), name
    header = (report / "results.md").read_text().split("\n| ")[0]
    assert (f"- reference of fmnist: fashion_mnist split 'test', {cfg.eval.num_real} images"
            in header), header

    records = trial_records(cache, cfg.train.steps)
    assert len(records) == 4
    for rec in records.values():
        assert all(math.isfinite(v) for v in rec["metrics"].values()), rec["metrics"]
        assert rec["loss_curve"] and all(math.isfinite(l) for _, l in rec["loss_curve"])
        # two evaluation spaces, every feature-space metric under each space's suffix
        for short in ("cls", "pixels"):
            assert {f"fd_{short}", f"f_score_{short}", f"vendi_{short}",
                    f"mem_nn_mean_{short}", f"mem_centroid_nn_mean_{short}"} \
                <= set(rec["metrics"]), rec["metrics"]
        assert 0.1 < rec["params"]["classifier_test_accuracy"] <= 1.0
        n = rec["params"]["n_train"]
        assert n == (400 if rec["trial"]["method"] == "full" else 200)

    client, runs = _mlflow_runs(cfg.mlflow.tracking_uri, "smoke")
    parents = [r for r in runs if r.data.tags.get("prunediff.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("prunediff.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 4
    subsets = [r for r in runs if r.data.tags.get("prunediff.role") == "subsets"]
    assert len(subsets) == 1 and len(runs) == 6       # the exported subsets: one run
    parent = parents[0].info.run_id
    parent_files = {a.path for a in client.list_artifacts(parent)}
    assert {"results.csv", "results.md", "config.yaml", "ratio_random.png"} <= parent_files
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status == "FINISHED"
        assert {"dataset", "method", "ratio", "seed", "n_train", "subset_hash"} <= set(run.data.params)
        assert math.isfinite(run.data.metrics["fd_pixels"]) and math.isfinite(run.data.metrics["fd_cls"])
        assert float(run.data.params["classifier_test_accuracy"]) > 0.1
        # the held-out reference: Fashion-MNIST's test split, capped at eval.num_real
        assert run.data.params["reference_origin"] == "fashion_mnist split 'test'"
        assert run.data.params["reference_size"] == str(cfg.eval.num_real)
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"samples.png", "subset_manifest.json", "loss_curve.png"} <= files
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(history) == cfg.train.steps // cfg.train.log_every

    # The same command again: every stage and trial comes from the cache, and MLflow
    # gets no duplicate runs.
    try:
        rc = run_pipeline(cfg, fresh=False)
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert rc == 0
    assert "4 already done, 0 to run" in out
    assert "encode done" in out
    assert_complete_table(out)
    assert trial_records(cache, cfg.train.steps) == records
    _, runs = _mlflow_runs(cfg.mlflow.tracking_uri, "smoke")
    assert len(runs) == 6                              # sweep, 4 trials, subsets: reused
