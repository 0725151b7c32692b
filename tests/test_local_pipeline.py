"""smoke.yaml end to end on the local executor (``resources.executor: local``): every stage
in one process without Ray, the same report, trial records and MLflow runs as on Ray
(``tests/test_pipeline_smoke.py`` compares the two tables), and a rerun that reuses it all."""

from __future__ import annotations

import pytest

from tests.pipeline_helpers import (SMOKE, assert_complete_table, check_smoke_outputs, local_smoke,
                                    mlflow_runs, needs_fmnist, trial_records)

pytestmark = [pytest.mark.e2e, needs_fmnist]


@pytest.mark.timeout(1500)
def test_smoke_on_the_local_executor_runs_without_ray(tmp_path_factory, capsys):
    from orchestrator.config import load_config
    from orchestrator.run import main

    out, proc = local_smoke(tmp_path_factory)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ray modules: 0" in proc.stdout, proc.stdout[-500:]   # Ray was never imported
    assert "local executor" in proc.stderr + proc.stdout
    assert "sweep: 4 trial(s), 0 already done, 4 to run (local executor)" in proc.stderr + proc.stdout
    assert_complete_table(proc.stdout)
    overrides = ["resources.executor=local", f"experiment.output_dir={out}"]
    cfg = load_config(SMOKE, overrides)
    records = check_smoke_outputs(cfg, out / "cache")

    # The same command again, here: everything from the cache, no new MLflow run.
    assert main([str(SMOKE), *sum((["--set", o] for o in overrides), [])]) == 0
    text = capsys.readouterr()
    assert "4 already done, 0 to run" in text.out + text.err
    assert trial_records(out / "cache", cfg.train.steps) == records
    assert len(mlflow_runs(cfg.mlflow.tracking_uri, "smoke")[1]) == 6

