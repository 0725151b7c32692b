"""Proxy checkpoints without Ray: a proxy cut after a checkpoint resumes from it and
records exactly the statistics of an uninterrupted run; the per-rank checkpoint files.

The Ray side (a rerun finds the run's checkpoint in Ray storage, ``--fresh`` deletes
it) is tested end to end in ``test_fresh.py``.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from orchestrator.training.loop import write_checkpoint_files
from orchestrator.training.proxy_stats import rank_files, read_rank_state, save_steps, train_proxy
from tests.gloo_helpers import run_gloo_ranks

N = 24


def _cfg(**kw) -> dict:
    return {"model": "DiT-Micro/2", "steps": 6, "batch_size": 8, "lr": 1e-3, "log_points": 3,
            "grad_checkpoints": 2, "draws": 2, "el2n_draws": 3, "grand_draws": 2, "chunk": 8,
            "n": N, "seed": 3, "stats": ["loss_traj", "loss_last", "grad_norm", "moso"],
            "conditional": True, "num_classes": 3, **kw}


# every statistic with its two halves (K >= 2 each): recorded and restored alike
COLUMNS = [f"{s}{h}" for s in ("loss_traj", "loss_last", "grad_norm", "moso")
           for h in ("", "_half_a", "_half_b")]


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"ids": np.arange(100, 100 + N, dtype=np.int64),
            "labels": rng.integers(0, 3, N).astype(np.int64),
            "latents": rng.standard_normal((N, 4, 8, 8)).astype(np.float32)}


class _Killed(Exception):
    """Stands for the driver being killed right after a checkpoint was written."""


def _serialized(state: dict) -> dict:
    """The state as a checkpoint file gives it back (torch.save, weights_only load)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _run(cfg: dict, state: dict | None = None, kill_at: int | None = None):
    """(records or None if killed, start step, [(step, saved state)])."""
    saved: list[tuple[int, dict]] = []

    def save(st: dict, step: int, loss: float) -> None:
        saved.append((step, _serialized(st)))
        if step == kill_at:
            raise _Killed

    try:
        rec, start = train_proxy(cfg, _data(), 0, 1, torch.device("cpu"), lambda m: m, state, save)
    except _Killed:
        return None, None, saved
    return rec, start, saved


def test_proxy_resumes_from_checkpoint_with_identical_statistics(one_torch_thread):
    cfg = _cfg()
    assert save_steps(cfg) == [2, 3, 4, 6]   # log points 2, 4, 6; gradient points 3, 6
    full, start, saved = _run(cfg)
    assert start == 0 and [s for s, _ in saved] == [2, 3, 4, 6]
    assert full["loss_traj"].shape == (N, 3) and full["grad_norm"].shape == (N, 2)
    assert full["moso"].shape == (N, 2) and all(np.isfinite(v).all() for v in full.values())
    assert sorted(full) == sorted(COLUMNS)
    assert full["moso_half_a"].shape == (N, 2) and full["loss_last_half_b"].shape == (N, 1)

    cut, _, saved = _run(cfg, kill_at=3)
    assert cut is None and [s for s, _ in saved] == [2, 3]
    ckpt = saved[-1][1]
    assert ckpt["step"] == 3 and ckpt["rec_loss_traj"].shape == (N, 1)
    assert ckpt["rec_grad_norm"].shape == (N, 1)
    assert ckpt["rec_moso_half_a"].shape == (N, 1) and ckpt["rec_loss_traj_half_b"].shape == (N, 1)

    resumed, start, saved = _run(cfg, state=ckpt)
    assert start == 3, "the rerun did not continue from the checkpoint"
    assert [s for s, _ in saved] == [4, 6]
    for key in full:
        np.testing.assert_allclose(resumed[key], full[key], rtol=0, atol=0, err_msg=key)

    # Resumed at the very end (killed before the shard reached the cache): no training,
    # one checkpoint again, the same statistics.
    again, start, saved = _run(cfg, state=saved[-1][1])
    assert start == 6 and [s for s, _ in saved] == [6]
    for key in full:
        np.testing.assert_allclose(again[key], full[key], rtol=0, atol=0, err_msg=key)


def test_proxy_resume_refuses_another_world_size(one_torch_thread):
    cfg = _cfg(steps=2, log_points=1, grad_checkpoints=1, stats=["loss_traj"])
    _, _, saved = _run(cfg)
    state = {**saved[-1][1], "world": 2}
    with pytest.raises(ValueError, match="2 rank"):
        _run(cfg, state=state)


def test_rank_checkpoint_files(tmp_path):
    def state(rank: int, world: int = 2) -> dict:
        return {"model": {"w": torch.full((2,), 1.0)}, "opt": {"state": {}, "param_groups": []},
                "step": 5, "world": world, "gen": torch.tensor([rank], dtype=torch.uint8),
                "label_gen": torch.tensor([rank], dtype=torch.uint8),
                "rec_loss_traj": torch.full((3, 1), float(rank), dtype=torch.float64)}

    assert read_rank_state(str(tmp_path), 0, 2) is None   # nothing written yet
    write_checkpoint_files(str(tmp_path), rank_files(state(1), 1))   # as the runtime saves it
    assert read_rank_state(str(tmp_path), 1, 2) is None   # rank 0's weights missing
    write_checkpoint_files(str(tmp_path), rank_files(state(0), 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.pt", "rank1.pt"]
    one = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert "model" not in one and "opt" not in one        # the weights are stored once
    got = read_rank_state(str(tmp_path), 1, 2)
    assert got["gen"].tolist() == [1] and got["rec_loss_traj"][0, 0] == 1.0
    assert torch.equal(got["model"]["w"], torch.full((2,), 1.0)) and got["step"] == 5
    assert read_rank_state(str(tmp_path), 0, 4) is None   # another world size: start over


def _ddp_rank(rank: int, world: int, port: int, out: str) -> None:
    """One gloo rank: uninterrupted run; run killed at step 3; resume via the rank files."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        cfg, cpu = _cfg(), torch.device("cpu")
        ddp = torch.nn.parallel.DistributedDataParallel
        full, _ = train_proxy(cfg, _data(), rank, world, cpu, ddp, None, lambda *a: None)
        saved: list[dict] = []

        def save(st: dict, step: int, loss: float) -> None:
            saved.append(st)
            if step == 3:
                raise _Killed

        with pytest.raises(_Killed):
            train_proxy(cfg, _data(), rank, world, cpu, ddp, None, save)
        ckpt = os.path.join(out, "checkpoint")   # one folder, as Ray Train's checkpoint
        os.makedirs(ckpt, exist_ok=True)
        write_checkpoint_files(ckpt, rank_files(saved[-1], rank))
        dist.barrier()
        state = read_rank_state(ckpt, rank, world)
        resumed, start = train_proxy(cfg, _data(), rank, world, cpu, ddp, state, lambda *a: None)
        np.savez(os.path.join(out, f"rank{rank}.npz"), start=start,
                 **{f"full_{k}": v for k, v in full.items()},
                 **{f"resumed_{k}": v for k, v in resumed.items()})
    finally:
        dist.destroy_process_group()


@pytest.mark.ray
def test_proxy_resume_two_ddp_ranks(tmp_path):
    """Two gloo ranks (MoSo's all-reduce, rank 1 restoring rank 0's weights)."""
    assert run_gloo_ranks(_ddp_rank, 2, str(tmp_path)) == [0, 0]
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as z:
            assert int(z["start"]) == 3
            for key in COLUMNS:
                assert z[f"full_{key}"].shape[0] == N // 2
                np.testing.assert_allclose(z[f"resumed_{key}"], z[f"full_{key}"], rtol=0, atol=0,
                                           err_msg=f"rank {rank} {key}")


def test_proxy_resume_refuses_a_checkpoint_without_the_halves(one_torch_thread):
    """A checkpoint of a proxy that recorded no split halves is not continued silently."""
    cfg = _cfg(steps=2, log_points=1, grad_checkpoints=1, stats=["loss_traj"])
    _, _, saved = _run(cfg)
    state = {k: v for k, v in saved[-1][1].items() if "_half_" not in k}
    with pytest.raises(ValueError, match="loss_traj_half_a"):
        _run(cfg, state=state)
