"""Drill: a trial's worker process is SIGKILLed mid-trial.

The sweep runs smoke.yaml in a CLI subprocess (its own session, its own local Ray)
with ``resources.max_failures=1``. As soon as a trial has written a checkpoint, the
test SIGKILLs the process that trains it, found by its Ray process title among the
processes of the driver's session (private to this test: no state-API connection to
the cluster, no hook in the code):

- ``train-worker``: ``ray::RayTrainWorker`` (the TorchTrainer's worker; today's path
  for every trial);
- ``tune-trainable``: the Tune function trainable's actor, ``ray::ImplicitFunc``,
  for the single-worker path that trains inside the trainable (``TuneRuntime``).
  Skipped while that path is absent from ``orchestrator/runtime/``.

Then: the run finishes (exit 0, complete table); exactly the killed trial resumed
from its checkpoint (``resumed_from_step > 0``); the trial finished before the kill (the
kill waits for one) keeps its record byte for byte (no rerun); and the table equals an
uninterrupted run's: the killed trial's record and checkpoints are deleted and the same
command trains it again from step 0, which must give the same metrics.

Two trials (full data and random: no proxy, no clustering), the upstream artifacts from
the session's shared smoke cache; two sweeps, the second of one trial (on the local
executor for the single-worker variant).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import (REPO, assert_complete_table, assert_readable_log, child_env,
                                    cli, needs_fmnist, shared_cache, table_rows, trial_records)

STEPS = 25   # train.steps of this test's trials (+10 for the TorchTrainer variant): keys
             # distinct from the other tests' (test_resume: 40) and from each other
METHODS = ("full", "random")   # the trials of this test
TITLES = {"train-worker": "ray::RayTrainWorker", "tune-trainable": "ray::ImplicitFunc"}


def _tune_runtime_present() -> bool:
    return any("class TuneRuntime" in Path(p).read_text()
               for p in glob.glob(str(REPO / "orchestrator" / "runtime" / "*.py")))


def _session_procs(sid: int) -> dict[int, str]:
    """{pid: process title} of the live processes in session ``sid``."""
    out = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        pid = int(stat.split("/")[2])
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out[pid] = title
    return out


def _checkpointed(out: Path, target: str) -> set[str]:
    """Run names of the trials with a checkpoint a restarted trial would resume from.

    ``train-worker``: registered by Ray Train's controller (listed in the run's
    ``checkpoint_manager_snapshot.json``; a folder alone may be uploaded but not yet
    registered when the worker dies). ``tune-trainable``: a run-folder checkpoint with
    its completion marker (``orchestrator.runtime.tune``).
    """
    runs = out / "ray_results" / "trials"
    if target == "train-worker":
        found = set()
        for snap in glob.glob(str(runs / "*" / "checkpoint_manager_snapshot.json")):
            try:
                if json.loads(Path(snap).read_text()).get("latest_checkpoint_result"):
                    found.add(Path(snap).parent.name)
            except (OSError, ValueError):
                continue   # being written
        return found
    return {Path(p).parent.parent.name for p in glob.glob(str(runs / "*" / "checkpoint_*" / ".complete"))}


def _run_name(key: str, rec: dict) -> str:
    return f"{rec['trial']['name']}-{key.split('/')[1][:10]}"


@pytest.mark.ray
@pytest.mark.timeout(2400)
@needs_fmnist
@pytest.mark.parametrize("target", [
    # 2-worker DDP: every rank re-derives its streams at each checkpoint step, so the resumed
    # run is bit-identical to an uninterrupted one (tests/test_trial_resume_ddp.py without Ray)
    "train-worker",
    "tune-trainable"])
def test_killed_worker_resumes_its_trial_only(target, tmp_path, tmp_path_factory):
    if target == "tune-trainable" and not _tune_runtime_present():
        pytest.skip("the single-worker Tune-trainable path (a TuneRuntime in "
                    "orchestrator/runtime/, branch fastsweep) is not on this branch")
    cache = shared_cache(tmp_path_factory)
    # Each variant its own trial keys in the shared cache (records are counted below).
    steps = STEPS if target == "tune-trainable" else STEPS + 10
    out = tmp_path / "out"
    # two trials (full data and random), one at a time: one is killed, the other is not
    args = ["experiments/smoke.yaml", "--set", f"experiment.output_dir={out}",
            "--set", f"storage.cache_dir={cache}", "--set", f"train.steps={steps}",
            "--set", "pruning.methods=[{name: random}]",
            "--set", "train.checkpoint_every=5", "--set", "resources.max_failures=1",
            "--set", "resources.max_concurrent_trials=1"]
    if target == "train-worker":   # single-worker trials train inside the Tune trainable
        args += ["--set", "resources.num_workers=2"]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "orchestrator.run", *args], cwd=REPO,
                                 env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    killed: tuple[int, str] | None = None
    try:
        deadline = time.time() + 1500
        while killed is None:
            assert first.poll() is None, f"finished before a kill: {log_path.read_text()[-3000:]}"
            assert time.time() < deadline, "no trial checkpoint in time"
            done = {_run_name(k, r) for k, r in trial_records(cache, steps).items()}
            cut = _checkpointed(out, target) - done
            procs = [pid for pid, t in _session_procs(first.pid).items()
                     if t.startswith(TITLES[target])]
            # after the first trial finished (its record must stay as it is), while the
            # second trains; 2 RayTrainWorkers for the TorchTrainer variant: kill one
            if done and cut and procs:
                before = trial_records(cache, steps)
                os.kill(procs[0], signal.SIGKILL)
                killed = (procs[0], sorted(cut)[0])
            time.sleep(0.2)
        rc = first.wait(timeout=1500)
    finally:
        if first.poll() is None:
            first.kill()
        time.sleep(2)
        for pid in _session_procs(first.pid):   # what the driver's Ray left: ours by session
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    text = log_path.read_text()
    assert rc == 0, text[-4000:]
    assert_complete_table(text, METHODS, len(METHODS))
    after = trial_records(cache, steps)
    assert len(after) == len(METHODS) and len(before) == 1
    for key, rec in before.items():
        assert after[key] == rec, f"finished trial {rec['trial']['name']} was trained again"
    resumed = {_run_name(k, r) for k, r in after.items() if r["resumed_from_step"] > 0}
    assert resumed == {killed[1]}, (resumed, killed)
    world = 2 if target == "train-worker" else 1
    assert all(r["world_size"] == world for r in after.values())

    # an uninterrupted run of the killed trial: same metrics, so the same table
    key = next(k for k, r in after.items() if _run_name(k, r) == killed[1])
    for p in glob.glob(str(cache / f"{key}.json*")):
        os.unlink(p)
    shutil.rmtree(out / "ray_results" / "trials" / killed[1])
    # the single-worker trial again on the local executor (the same trial and table as on
    # Ray: tests/test_pipeline_smoke.py), which starts no second Ray; DDP needs Ray
    again = cli(args + (["--set", "resources.executor=local"] if target == "tune-trainable"
                        else []), timeout=1500)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    # a readable log (for train-worker a DDP sweep in Ray Train: no doubled lines)
    assert_readable_log(again.stdout + again.stderr)
    assert "1 already done, 1 to run" in again.stdout + again.stderr
    fresh = trial_records(cache, steps)[key]
    assert fresh["resumed_from_step"] == 0
    assert fresh["metrics"] == after[key]["metrics"], (fresh["metrics"], after[key]["metrics"])
    assert (table_rows(again.stdout[again.stdout.rindex("Results ("):])
            == table_rows(text[text.rindex("Results ("):]))
