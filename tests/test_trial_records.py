"""Typed trial records (TrialSpec / TrialResult) and the shared loop's runtime interface."""

from __future__ import annotations

import json

import numpy as np
import torch

from orchestrator.config import (ClassifierConfig, EvalConfig, ModelConfig, SampleConfig,
                                 TrainConfig, Trial)
from orchestrator.training.loop import LocalRuntime, LoopSpec, build_model, train_steps
from orchestrator.training.records import TrialFiles, TrialInputs, TrialResult, TrialSpec

# result.json as finished trials wrote it before the records were typed
OLD_RESULT = {
    "key": "trial/abc", "trial": {"dataset": "fmnist", "method": "random", "ratio": 0.5, "seed": 1,
                                  "name": "fmnist-random-r50-s1"},
    "params": {"n_train": 10, "trial_key": "trial/abc"}, "metrics": {"fd_pixels": 2.5, "vendi": 3},
    "loss_curve": [[25, 1.5], [50, 1.25]], "timing": {"train_s": 1.0, "sample_s": 2.0, "eval_s": 3.0},
    "resumed_from_step": 25, "world_size": 2, "finished_at": 1700000000.5,
    "files": {"grid": "trialgrid/x", "manifest": "subset/y"},
}


def test_result_reads_the_cached_shape_and_writes_it_back():
    res = TrialResult.from_json(json.loads(json.dumps(OLD_RESULT)))
    assert res.trial == Trial("fmnist", "random", 0.5, 1) and res.trial.name == "fmnist-random-r50-s1"
    assert res.files == TrialFiles(grid="trialgrid/x", manifest="subset/y")
    assert res.metrics == {"fd_pixels": 2.5, "vendi": 3.0} and res.resumed_from_step == 25
    assert res.to_json() == {**OLD_RESULT, "metrics": {"fd_pixels": 2.5, "vendi": 3.0}}
    assert res.row() == {"dataset": "fmnist", "method": "random", "ratio": 0.5, "seed": 1,
                         "fd_pixels": 2.5, "vendi": 3.0}
    extra = TrialResult.from_json({**OLD_RESULT, "note": "kept"})
    assert extra.to_json()["note"] == "kept"


def test_spec_round_trips_through_json():
    spec = TrialSpec(key="trial/k", cache_root="/c", run_name="fmnist-full-r00-s0-abc",
                     trial=Trial("fmnist", "full", 0.0, 0), params={"n_train": 5},
                     inputs=TrialInputs("latents/a", "subset/b", "vqvae/c",
                                        {"classifier": "embed/d", "pixels": "embed/e"},
                                        {"classifier": "classifier/f"}),
                     conditional=True, num_classes=10, model=ModelConfig(), train=TrainConfig(),
                     sample=SampleConfig(), eval_weights={"pixels": "/w.pt"},
                     eval=EvalConfig(embedders=("classifier", "pixels"), primary="classifier",
                                     metrics=("fd", "prdc"), classifier=ClassifierConfig(steps=7)))
    d = json.loads(json.dumps(spec.to_json()))
    assert d["trial"]["name"] == "fmnist-full-r00-s0" and d["inputs"]["subset"] == "subset/b"
    assert TrialSpec.from_json({**d, "threads": 2, "use_gpu": False}) == spec


def test_loop_calls_hooks_each_step_and_resumes_on_the_same_batches():
    """train_steps(start=k) continues a run: same batches, hooks see steps k+1..n."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((12, 4, 8, 8)).astype(np.float32))

    def run(start: int, steps: int, state=None):
        model, gen = build_model("DiT-Micro/2", (4, 8, 8), 0, seed=5, rank=0, world=1, init_seed=5)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
        seen = []
        train_steps(model, opt, x, None, gen, LoopSpec(steps, 4, 5), LocalRuntime(), start=start,
                    hooks=[lambda done, loss: seen.append((done, loss))])
        return seen, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state()}

    full, _ = run(0, 4)
    assert [d for d, _ in full] == [1, 2, 3, 4] and all(np.isfinite(v) for _, v in full)
    first, state = run(0, 2)
    rest, _ = run(2, 4, state)
    assert first + rest == full
