"""Helpers of the pipeline end-to-end tests (smoke.yaml on the local Fashion-MNIST).

The encode / embed / proxy artifacts of smoke.yaml are shared by the Ray end-to-end
tests of one pytest session through one cache directory (:func:`shared_cache`), a copy
of the local executor's smoke run; each test changes only trial settings
(``train.steps``), so its trials are new while the upstream stages come from the cache.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "experiments" / "smoke.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SMOKE_METHODS = ("full", "random", "el2n", "clustering_balanced")

_shared: dict[str, Path] = {}

needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_file(), reason=f"Fashion-MNIST not installed ({FMNIST}; apt-get install "
                                 "dataset-fashion-mnist)")


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block; restore every key afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared smoke cache directory: a copy of the local executor's smoke
    cache (:func:`local_smoke`, run once per session), so the Ray tests that share it
    start with smoke.yaml's upstream artifacts (VQ-VAE, latents, classifier, features,
    reference, proxy statistics, built with one worker) and its four 20-step trial
    records, and train only trials of their own ``train.steps``. The tests that check
    how Ray builds the upstream stages use caches of their own (test_pipeline_smoke,
    test_fresh)."""
    if "cache" not in _shared:
        out, proc = local_smoke(tmp_path_factory)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        cache = tmp_path_factory.mktemp("smoke-cache")
        shutil.copytree(out / "cache", cache, dirs_exist_ok=True)
        _shared["cache"] = cache
    return _shared["cache"]


def smoke_overrides(out: Path, cache: Path, *extra: str) -> list[str]:
    return [f"experiment.output_dir={out}", f"storage.cache_dir={cache}", *extra]


def child_env(local_ray: bool = True, **extra: str) -> dict[str, str]:
    """Environment of a driver subprocess: repo importable, offline.

    ``local_ray``: ``RAY_ADDRESS=local`` makes the driver start its own Ray instead of
    joining another Ray cluster running on the machine (other test sessions' heads).
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    if local_ray:
        env["RAY_ADDRESS"] = "local"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("RAY_AUTH_MODE", "token")  # same mode as in-process ray.init() (DESIGN.md)
    env.update(extra)
    return env


def cli(args: list[str], timeout: float, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator.run ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "orchestrator.run", *args], cwd=REPO,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def trial_records(cache: Path, train_steps: int | None = None) -> dict[str, dict]:
    """Result records in the cache by trial key (optionally one train.steps only)."""
    out = {}
    for path in glob.glob(str(cache / "trial" / "*.json")):
        if not os.path.exists(path + ".sha256"):
            continue
        rec = json.loads(Path(path).read_text())
        if train_steps is None or rec["params"]["train_steps"] == train_steps:
            out[rec["key"]] = rec
    return out


def table_rows(markdown: str) -> list[list[str]]:
    """Body rows of the printed Markdown comparison table."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


def assert_complete_table(text: str, methods=SMOKE_METHODS, n_rows: int = 4) -> None:
    """The printed table has every method row with finite numbers."""
    rows = [r for r in table_rows(text) if r and r[0] == "fmnist"]
    assert len(rows) == n_rows, text[-3000:]
    assert [r[1] for r in rows] == list(methods)
    for r in rows:
        for cell in r[3:-1]:
            assert cell and cell != "nan", r
            float(cell.split(" ± ")[0])


def assert_readable_log(text: str, max_lines: int = 250) -> None:
    """A run's stdout and stderr off a terminal read as a log (issue 13): no carriage-return
    redraws (progress bars), no crash trace, a bounded length, no line printed twice in a
    row (Ray Train's print patch doubled them), and the run's own progress lines.

    ``max_lines``: a bound for the smoke config, not a measured length."""
    lines = text.splitlines()
    redraws = [ln for ln in text.split("\n") if "\r" in ln]
    assert not redraws, f"{len(redraws)} progress-bar redraw lines, e.g. {redraws[0][:200]!r}"
    assert "Traceback" not in text, text[text.index("Traceback") - 500:][:3000]
    assert "SIGABRT" not in text and "Mutex corrupt" not in text
    assert len(lines) <= max_lines, f"{len(lines)} lines:\n" + "\n".join(lines[:400])
    assert "[prunediff" in text and "sweep done" in text
    said = [ln for ln in lines if "[prunediff" in ln]
    doubled = [a for a, b in zip(said, said[1:]) if a == b]
    assert not doubled, f"lines printed twice (Ray Train's print patch?), e.g. {doubled[0]!r}"


def mlflow_runs(tracking_uri: str, experiment: str) -> tuple:
    """(client, every run of ``experiment``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, runs


def check_smoke_outputs(cfg, cache: Path) -> dict[str, dict]:
    """A finished smoke.yaml run, whatever its executor: the report files and header, the
    four trial records (finite metrics in both spaces, loss curves), and MLflow (one sweep
    run, four finished trial runs with params, artifacts and the live loss, one subsets
    run). Returns the trial records by key."""
    report = Path(cfg.experiment.output_dir) / "report"
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

    client, runs = mlflow_runs(cfg.mlflow.tracking_uri, "smoke")
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

    return records


def local_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """smoke.yaml on the local executor (``resources.executor=local``) in a child process,
    with its own output and cache (the Ray tests share a copy of it: :func:`shared_cache`),
    once per session; (output dir, the finished process). The child exits with
    the run's code; it prints ``ray modules: N``, the Ray modules it imported."""
    if "local" not in _shared:
        out = tmp_path_factory.mktemp("smoke-local")
        driver = ("import sys\n"
                  "from orchestrator.run import main\n"
                  "rc = main(sys.argv[1:])\n"
                  "print('ray modules:', sum(m == 'ray' or m.startswith('ray.') "
                  "for m in sys.modules))\n"
                  "sys.exit(rc)\n")
        proc = subprocess.run(
            [sys.executable, "-c", driver, str(SMOKE), "--set", "resources.executor=local",
             "--set", f"experiment.output_dir={out}"],
            cwd=REPO, env=child_env(local_ray=False), capture_output=True, text=True,
            timeout=1200)
        _shared["local"] = (out, proc)
    return _shared["local"]


def same_results(a: Path, b: Path) -> str:
    """"" when two results.csv files hold the same rows and numbers (float64 equal); else
    the first difference, in words."""
    import csv

    def rows(path: Path) -> list[dict[str, str]]:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    ra, rb = rows(a), rows(b)
    if len(ra) != len(rb) or (ra and list(ra[0]) != list(rb[0])):
        return f"{a}: {len(ra)} rows, columns {list(ra[0]) if ra else []}; {b}: {len(rb)} rows"
    for x, y in zip(ra, rb):
        for col, va in x.items():
            vb = y[col]
            try:
                same = float(va) == float(vb) or (va.lower() == vb.lower() == "nan")
            except ValueError:
                same = va == vb
            if not same:
                return f"{x.get('method')} r{x.get('ratio')}: {col} {va} vs {vb}"
    return ""
