"""The whole pipeline with every artifact, Ray's storage and MLflow's artifacts in s3://.

smoke.yaml (one el2n trial, so the proxy and its checkpoints in Ray storage run too) with
``experiment.output_dir=s3://...`` against a local S3 endpoint (tests/s3_helpers.py);
only the MLflow tracking store is a local SQLite file, as the config requires for a
remote output dir. A rerun of the same config resumes from the bucket; it runs on the
local executor, since no cache key names the executor (and it skips a second Ray start).
The first run's output is also the suite's check of a whole run's log
(``assert_readable_log``, issue 13).
"""

from __future__ import annotations

import pytest

pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")

from tests.pipeline_helpers import (REPO, assert_complete_table, assert_readable_log,  # noqa: E402
                                    child_env, cli, needs_fmnist)
from tests.s3_helpers import bucket_keys, local_s3  # noqa: E402

BUCKET = "prunediff-e2e"


@pytest.mark.ray
@pytest.mark.timeout(1500)
@needs_fmnist
def test_smoke_pipeline_on_s3(tmp_path):
    with local_s3(BUCKET) as aws:
        args = ["experiments/smoke.yaml",
                "--set", f"experiment.output_dir=s3://{BUCKET}/smoke",
                "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                "--set", "pruning.baseline=false",
                "--set", "pruning.methods=[{name: el2n}]"]
        env = child_env(**aws)
        first = cli(args, timeout=1200, env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert_complete_table(first.stdout, methods=("el2n",), n_rows=1)
        # every stage from scratch on Ray (Data, tasks, Tune): a log a person can read
        assert_readable_log(first.stdout + first.stderr)
        keys = bucket_keys(aws, BUCKET, "smoke/")
        tops = {k.split("/")[1] for k in keys}
        assert {"cache", "ray_results", "report", "mlartifacts"} <= tops, sorted(tops)
        stages = {k.split("/")[2] for k in keys if k.startswith("smoke/cache/")}
        assert {"vqvae", "latents", "embed", "proxy", "score", "subset", "trial"} <= stages
        assert any(k.endswith("report/results.csv") for k in keys)
        assert any("/checkpoint_" in k for k in keys if k.startswith("smoke/ray_results/"))
        assert not (REPO / "s3:").exists()          # nothing written to a local "s3:" dir

        again = cli(args + ["--set", "resources.executor=local"], timeout=600, env=env)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "1 already done, 0 to run" in again.stdout, again.stdout[-3000:]
        assert "training VQ-VAE" not in again.stdout
