"""A 2-rank DDP trial cut after a checkpoint resumes to exactly the uninterrupted run's
model (no Ray: two gloo processes, the checkpoint handed over in memory).

Rank 0 alone writes a trial checkpoint, so the other rank's random streams are not in
it; both ranks re-derive their streams at every checkpoint step
(``orchestrator.training.trial.reseed_streams``), in the resumed and the uninterrupted
run alike. Before that, the resumed run drew other t/noise than the uninterrupted one
and its metrics differed in the 3rd decimal (issue 15's 2-worker worker-kill drill).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from orchestrator.config import EvalConfig, ModelConfig, SampleConfig, TrainConfig, Trial
from orchestrator.training.records import TrialInputs, TrialSpec
from orchestrator.training.trial import STATE_FILE, train_model
from tests.gloo_helpers import run_gloo_ranks

N = 32


class _Killed(Exception):
    """Stands for the worker being killed right after a checkpoint was registered."""


def _spec() -> TrialSpec:
    return TrialSpec(key="trial/x", cache_root="/unused", run_name="r",
                     trial=Trial("d", "full", 0.0, 5), params={},
                     inputs=TrialInputs("l", "s", "v", "f"), conditional=True, num_classes=3,
                     model=ModelConfig(preset="DiT-Micro/2"),
                     train=TrainConfig(steps=6, batch_size=8, lr=1e-3, ema_decay=0.5,
                                       checkpoint_every=2, log_every=1),
                     sample=SampleConfig(), eval=EvalConfig())


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, N).astype(np.int64)
    return {"labels": labels, "train_labels": labels,
            "latents": rng.standard_normal((N, 4, 8, 8)).astype(np.float32),
            "subset": np.arange(N, dtype=np.int64)}


class _Runtime:
    """The TrialRuntime of one gloo rank: DDP, checkpoints in ``saved`` (rank 0's files),
    an optional state to resume from, and a kill after the checkpoint of ``kill_at``."""

    def __init__(self, rank: int, world: int, state: dict | None = None, kill_at: int = 0):
        self.rank, self.world, self.device = rank, world, torch.device("cpu")
        self.state, self.kill_at, self.saved = state, kill_at, []

    def prepare_model(self, model):
        return torch.nn.parallel.DistributedDataParallel(model)

    def save_checkpoint(self, metrics, files):
        self.saved.append((metrics["step"], files))
        if metrics["step"] == self.kill_at:
            raise _Killed

    def load_checkpoint(self, read):
        return self.state

    def finish(self, metrics):
        pass


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        full, curve, _ = train_model(_spec(), _data(), _Runtime(rank, world))
        cut = _Runtime(rank, world, kill_at=4)
        try:
            train_model(_spec(), _data(), cut)
        except _Killed:
            pass
        path = os.path.join(out, STATE_FILE)
        if rank == 0:
            step, files = cut.saved[-1]
            assert step == 4
            torch.save(files[STATE_FILE], path)
        dist.barrier()
        state = torch.load(path, weights_only=True)   # every rank reads rank 0's file
        resumed, curve_r, start = train_model(_spec(), _data(), _Runtime(rank, world, state))
        np.savez(os.path.join(out, f"rank{rank}.npz"), start=start,
                 curve=np.array(curve), curve_resumed=np.array(curve_r),
                 **{f"full_{k}": v.numpy() for k, v in full.state_dict().items()},
                 **{f"resumed_{k}": v.numpy() for k, v in resumed.state_dict().items()})
    finally:
        dist.destroy_process_group()


@pytest.mark.ray
def test_two_rank_trial_resumes_bit_identical(tmp_path):
    assert run_gloo_ranks(_rank, 2, str(tmp_path)) == [0, 0]
    with np.load(tmp_path / "rank0.npz") as z:
        assert int(z["start"]) == 4
        np.testing.assert_array_equal(z["curve_resumed"], z["curve"])
        keys = [k[5:] for k in z.files if k.startswith("full_")]
        assert keys
        for k in keys:
            np.testing.assert_array_equal(z[f"resumed_{k}"], z[f"full_{k}"], err_msg=k)
