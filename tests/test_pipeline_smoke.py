"""smoke.yaml end to end in-process: table, MLflow runs and artifacts, cache reuse,
and no CPUs left reserved in Ray after the run (placement groups, Train controllers)."""

from __future__ import annotations

import pytest

from tests.pipeline_helpers import (SMOKE, assert_complete_table, check_smoke_outputs, local_smoke,
                                    mlflow_runs, needs_fmnist, same_results, smoke_overrides,
                                    trial_records)


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


@pytest.mark.ray
@pytest.mark.timeout(1200)
@needs_fmnist
def test_smoke_end_to_end_in_process(tmp_path, tmp_path_factory, capsys, monkeypatch):
    """Also the Ray-vs-local check of issue 25: the table equals the local executor's."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "local")   # our own Ray, not another session's head
    from orchestrator.config import load_config
    from orchestrator.pipeline import run_pipeline
    from orchestrator.runtime.cluster import init_ray

    # A cache of its own, not the session's shared one: the other Ray tests fill that one
    # with other resources (the worker-kill drill trains the VQ-VAE and the proxy with 2
    # DDP workers; resources are not part of a cache key), so its numbers would differ
    # from the local executor's.
    cache = tmp_path / "cache"
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
    records = check_smoke_outputs(cfg, cache)
    # the same config on the local executor (tests/test_local_pipeline.py, its own cache):
    # the same table, to the last digit
    local_out, _ = local_smoke(tmp_path_factory)
    assert same_results(tmp_path / "out" / "report" / "results.csv",
                        local_out / "report" / "results.csv") == ""

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
    _, runs = mlflow_runs(cfg.mlflow.tracking_uri, "smoke")
    assert len(runs) == 6                              # sweep, 4 trials, subsets: reused
