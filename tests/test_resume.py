"""Resume: SIGKILL the driver after a trial finished, rerun the same command.

Finished trials are not trained again (their result records stay byte-identical),
a trial cut after a checkpoint continues from it, cached stages are reused, and the
table is complete. On the local executor (one worker, trials one after another in the
driver, each resuming from its run folder): the driver-side resume (which trials are done,
which continue) is the same for every executor. On Ray: the single-worker path (the loop
inside the Tune trainable, resuming from its run folder or its Tune checkpoint) is
``tests/test_tune_resume.py``; a killed DDP worker, the rerun of a sweep with one trial
done and the resumed trial's equality with an uninterrupted run are the worker-kill drill
(``tests/test_drill_worker_kill.py``).
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_helpers import (REPO, assert_complete_table, child_env, cli, needs_fmnist,
                                    shared_cache, trial_records)

# train.steps of this test's trials: keys distinct from the other tests' (trial_records
# filters by steps; the worker-kill drill trains 25 and 35)
STEPS = 40
# trials take a few seconds each, so three leave a margin: one done, at least one to run
METHODS = ("full", "random", "el2n")


def _session_pids(sid: int) -> list[int]:
    """Processes still alive in a session (what the killed driver started)."""
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":   # fields[3]: session id
            pids.append(int(stat.split("/")[2]))
    return pids


def _checkpointed_runs(out: Path) -> set[str]:
    return {Path(p).parent.name for p in glob.glob(str(out / "ray_results" / "trials" / "*" / "checkpoint_*"))}


@pytest.mark.e2e
@pytest.mark.timeout(1800)
@needs_fmnist
def test_resume_after_sigkill(tmp_path, tmp_path_factory):
    cache = shared_cache(tmp_path_factory)
    out = tmp_path / "out"
    steps = STEPS
    args = ["experiments/smoke.yaml", "--set", f"experiment.output_dir={out}",
            "--set", f"storage.cache_dir={cache}", "--set", f"train.steps={steps}",
            "--set", "train.checkpoint_every=10",
            "--set", "resources.executor=local", "--set", "resources.num_workers=1",
            # one trial finishes before the kill, at least one is still to run
            "--set", "pruning.methods=[" + ", ".join(
                f"{{name: {m}}}" for m in METHODS if m != "full") + "]"]
    trials = len(METHODS)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([sys.executable, "-m", "orchestrator.run", *args], cwd=REPO,
                             env=child_env(), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.time() + 1200
        while not trial_records(cache, steps):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        # Whatever the killed driver started goes too (the local executor starts no Ray,
        # but a stray child must not race the rerun).
        time.sleep(3)
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    finished = trial_records(cache, steps)
    assert 1 <= len(finished) < trials, "kill came too late to test resuming"
    cut = _checkpointed_runs(out) - {f"{r['trial']['name']}-{k.split('/')[1][:10]}"
                                     for k, r in finished.items()}

    second = cli(args, timeout=1500)
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-4000:]
    assert f"{len(finished)} already done, {trials - len(finished)} to run" in text
    assert "encode[fmnist]: VQ-VAE cached" in text and "training VQ-VAE" not in text
    assert "proxy[fmnist]: statistics cached" in text
    assert_complete_table(text, METHODS, trials)
    after = trial_records(cache, steps)
    assert len(after) == trials
    for key, rec in finished.items():
        assert after[key] == rec, f"finished trial {rec['trial']['name']} was trained again"
    for key, rec in after.items():
        assert rec["world_size"] == 1
        run = f"{rec['trial']['name']}-{key.split('/')[1][:10]}"
        if run in cut:   # cut mid-way after a checkpoint: continued from it
            assert rec["resumed_from_step"] > 0, rec["trial"]["name"]
