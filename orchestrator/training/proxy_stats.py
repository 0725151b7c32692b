"""The proxy's per-sample statistics, recorded by a step hook of the one DiT loop.

Only the statistics asked for are recorded (GraNd / MoSo gradient passes are the
expensive ones):

- ``loss_traj`` (N, T): per-sample flow loss at ``log_points`` evenly spaced steps;
- ``loss_last`` (N, 1): per-sample flow loss at the last step, ``el2n_draws`` draws (EL2N);
- ``grad_norm`` (N, G): per-sample gradient norm at ``grad_checkpoints`` steps (of the
  output layer, ``grand_draws`` draws, by default: ``proxy.grand_params``);
- ``moso`` (N, G): MoSo score at the same steps (mean gradient all-reduced).

Each statistic averages K draws (:data:`STAT_DRAWS` names the config entry); with K >= 2
the proxy also records it from each half of its draws, ``<stat>_half_a`` (draws
[0, K//2)) and ``<stat>_half_b`` ([K//2, K)), same shape (``pruning.stats_halves``:
the per-draw values are computed once and averaged three ways, so the full statistic
is unchanged; each half's MoSo uses that half's gradients and mean gradient only).
With K < 2 the halves are absent (:func:`record_keys`).

Each rank measures its stride of the dataset (positions ``rank::world``).

Resume: the proxy checkpoints at every step where it records statistics (the union
of the log and gradient points, the last step included). Each rank writes
``rank<r>.pt`` into the checkpoint (its recorded columns and its random streams;
rank 0 also the model and optimizer), so a rerun continues from the last checkpoint
and records exactly the statistics of an uninterrupted run. No Ray here.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from models.dit import DiT
from models.transport import per_sample_flow_loss
from orchestrator.config.schema import ProxyConfig
from orchestrator.training.loop import LoopSpec, build_model, train_steps, unwrap
from pruning import stats as st
from pruning import stats_halves as sh
from pruning.stats_halves import FULL, HALVES, half_key

log = logging.getLogger(__name__)
STAT_KEYS = ("loss_traj", "loss_last", "grad_norm", "moso")
# the proxy config entry holding each statistic's K draws
STAT_DRAWS = {"loss_traj": "draws", "loss_last": "el2n_draws", "grad_norm": "grand_draws",
              "moso": "draws"}
SaveFn = Callable[[dict, int, float], None]   # (state, step, loss) at a checkpoint step


def checkpoint_steps(steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps in (0, steps], the last one == steps."""
    return sorted({max(1, int(round(steps * (i + 1) / points))) for i in range(points)})


def record_keys(cfg: dict, stats: tuple[str, ...] | list[str]) -> list[str]:
    """The recorded columns: each statistic, then its two halves when its K >= 2
    (``pruning.stats_halves.half_key``; K is the config entry :data:`STAT_DRAWS` names)."""
    keys = []
    for stat in stats:
        keys.append(stat)
        if stat_draws(cfg, stat) >= 2:
            keys += [half_key(stat, h) for h in HALVES]
    return keys


def stat_draws(cfg: dict, stat: str) -> int:
    """K, the draws a statistic averages over (``cfg[STAT_DRAWS[stat]]``, the config default)."""
    name = STAT_DRAWS[stat]
    return int(cfg.get(name, getattr(ProxyConfig, name)))


def _named(stat: str, means: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"full": v, "a": v_a, ...}`` -> ``{stat: v, stat_half_a: v_a, ...}`` as float64 numpy."""
    return {stat if v == FULL else half_key(stat, v): np.asarray(
        val.cpu().numpy() if hasattr(val, "cpu") else val, dtype=np.float64)
        for v, val in means.items()}


def measure_stats(cfg: dict, model: Any, x: Any, y: Any, ids: Any, stats: tuple[str, ...],
             which: str, world: int) -> dict[str, np.ndarray]:
    """One checkpoint's statistics for this rank's shard (batched), each with its halves.

    Returns ``{column: (n_local,) float64}`` for :func:`record_keys` columns of the
    statistics measured at ``which``. The per-draw values are computed once: the full
    statistic is their mean over all K draws (the same draws and values as the
    ``pruning.stats`` functions), each half their mean over draws [0, K//2) / [K//2, K)
    (MoSo: see ``pruning.stats_halves``).
    """
    loss_fn = per_sample_flow_loss
    seed, chunk, n_total = cfg["seed"], cfg["chunk"], cfg["n"]
    noise = cfg.get("noise", ProxyConfig.noise)   # proxy.noise: per-sample or shared noise
    bs = max(chunk, 256)
    parts = [(x[s:s + bs], None if y is None else y[s:s + bs], ids[s:s + bs])
             for s in range(0, x.shape[0], bs)]
    out: dict[str, np.ndarray] = {}
    for stat in {"log": ("loss_traj",), "last": ("loss_last",)}.get(which, ()):
        if stat in stats:
            k = stat_draws(cfg, stat)
            draws = torch.cat([sh.per_sample_loss_draws(model, loss_fn, xb, yb, ib, k, seed,
                                                         noise=noise) for xb, yb, ib in parts])
            out.update(_named(stat, sh.split_means(draws)))   # (n_local, K) -> means
    if which == "grad" and "grad_norm" in stats:
        # proxy.grand_params "output": the output layer's gradient (DeepCore's GraNd) at
        # grand_draws draws: split-half 0.93 at K=12 for the cost of the full gradient at
        # K=3 (0.67-0.73), benchmarks/results/stat_stability.md
        output = cfg.get("grand_params", ProxyConfig.grand_params) == "output"
        only = DiT.OUTPUT_LAYER if output else None
        kg = stat_draws(cfg, "grad_norm")
        draws = torch.cat([
            sh.per_sample_grad_norm_draws(model, loss_fn, xb, yb, ib, kg, seed, chunk, noise=noise,
                                          only=only)
            for xb, yb, ib in parts])
        out.update(_named("grad_norm", sh.split_means(draws)))
    if which == "grad" and "moso" in stats:
        out.update(_moso(cfg, model, loss_fn, parts, world, n_total, noise))
    return out


def _all_reduce(v: Any, world: int) -> Any:
    if world > 1:
        dist.all_reduce(v)
    return v


def _moso(cfg: dict, model: Any, loss_fn: Any, parts: list, world: int, n_total: int,
          noise: str) -> dict[str, np.ndarray]:
    """MoSo (n_local,) of the shard, and of each half of the draws when K >= 2."""
    k, seed, chunk = stat_draws(cfg, "moso"), cfg["seed"], cfg["chunk"]
    if k < 2:   # no halves: the single-pass MoSo
        g_sum = _all_reduce(sum(st.gradient_sum(model, loss_fn, xb, yb, ib, k, seed, chunk,
                                                noise=noise) for xb, yb, ib in parts), world)
        g_mean = g_sum / n_total
        sq, dots = zip(*[st.moso_terms(model, loss_fn, xb, yb, ib, k, seed, g_mean, chunk,
                                       noise=noise) for xb, yb, ib in parts])
        return {"moso": st.moso_scores(n_total, g_mean, torch.cat(sq), torch.cat(dots))}
    sums = [sh.gradient_sum_halves(model, loss_fn, xb, yb, ib, k, seed, chunk, noise=noise)
            for xb, yb, ib in parts]
    g_means = {h: _all_reduce(sum(s[h] for s in sums), world) / n_total for h in sh.HALVES}
    g_means[sh.FULL] = sh.combine_halves(g_means, k)
    terms = [sh.moso_terms_halves(model, loss_fn, xb, yb, ib, k, seed, g_means, chunk, noise=noise)
             for xb, yb, ib in parts]
    return _named("moso", {v: st.moso_scores(n_total, g_means[v],
                                             torch.cat([t[v][0] for t in terms]),
                                             torch.cat([t[v][1] for t in terms]))
                           for v in g_means})


def save_steps(cfg: dict) -> list[int]:
    """Checkpoint steps of the proxy: wherever statistics are recorded, and the last step."""
    return sorted(set(checkpoint_steps(cfg["steps"], cfg["log_points"]))
                  | set(checkpoint_steps(cfg["steps"], cfg["grad_checkpoints"])) | {cfg["steps"]})


def _records_state(rec: dict[str, list[np.ndarray]], n_local: int) -> dict[str, Any]:
    """Recorded columns (:func:`record_keys`) as ``{"rec_<column>": (n_local, t) float64
    tensor}`` (t may be 0)."""
    return {f"rec_{k}": torch.from_numpy(np.stack(v, axis=1) if v else np.zeros((n_local, 0)))
            for k, v in rec.items()}


def train_proxy(cfg: dict, data: dict[str, np.ndarray], rank: int, world: int, device: Any,
                prepare: Callable[[Any], Any], state: dict | None,
                save: SaveFn) -> tuple[dict[str, np.ndarray], int]:
    """Train the proxy DiT and record this rank's statistics (no Ray in here).

    The training is :func:`orchestrator.training.loop.train_steps`; the statistics are
    its step hook (:class:`_Recorder`).

    Args:
        cfg: the proxy section plus ``stats``, ``n``, ``seed``, ``conditional``,
            ``num_classes`` (see ``orchestrator.stages.proxy.ensure_proxy_stats``).
        data: ``ids`` (N,) int64, ``labels`` (N,) int64, ``latents`` (N, C, h, w) float32.
        rank, world: this DDP rank and the world size; the rank measures positions
            ``rank::world`` and trains on its stride of every global batch.
        device: torch device of this rank.
        prepare: wraps the model for DDP (``TrialRuntime.prepare_model``, or identity).
        state: a state passed to ``save`` earlier (same world size) to resume from, or None.
        save: called with ``(state, step, loss)`` at every :func:`save_steps` step; the
            state holds this rank's records and random streams, the model and optimizer.

    Returns:
        ``({column: (N_rank, T or G) float64}, start step)`` over :func:`record_keys`
        (each statistic and, when its K >= 2, its ``_half_a`` / ``_half_b``); the start
        step is 0 for a new run and the checkpoint's step for a resumed one.
    """
    x_all = torch.from_numpy(data["latents"].astype(np.float32))
    y_all = torch.from_numpy(data["labels"].astype(np.int64)) if cfg["conditional"] else None
    n = x_all.shape[0]
    pos = np.arange(rank, n, world)
    xs = x_all[pos].to(device)
    ys = y_all[pos].to(device) if y_all is not None else None
    ids = torch.from_numpy(data["ids"][pos].astype(np.int64)).to(device)
    model, gen = build_model(cfg["model"], tuple(x_all.shape[1:]),
                             cfg["num_classes"] if cfg["conditional"] else 0, cfg["seed"], rank,
                             world, init_seed=cfg["seed"])
    label_gen = model.label_generator   # class dropout draws
    columns = record_keys(cfg, cfg["stats"])
    rec: dict[str, list[np.ndarray]] = {k: [] for k in columns}
    start = 0
    if state is not None:
        if int(state["world"]) != world:
            raise ValueError(f"proxy checkpoint of {state['world']} rank(s), this run has {world}")
        model.load_state_dict(state["model"])
        # The streams continue where they were: a resumed run draws what an uninterrupted one would.
        gen.set_state(state["gen"])
        label_gen.set_state(state["label_gen"])
        missing = [k for k in columns if f"rec_{k}" not in state]
        if missing:
            raise ValueError(f"proxy checkpoint without the recorded columns {missing}")
        rec = {k: list(state[f"rec_{k}"].numpy().T) for k in columns}
        start = int(state["step"])
    model = prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    if state is not None:
        opt.load_state_dict(state["opt"])

    def snapshot(step: int) -> dict[str, Any]:
        return _state(unwrap(model), opt, gen, label_gen, rec, step, world, len(pos))

    recorder = _Recorder(cfg, model, (xs, ys, ids), rec, world, save, snapshot)
    train_steps(model, opt, x_all, y_all, gen, LoopSpec(cfg["steps"], cfg["batch_size"], cfg["seed"],
                                                        desc="proxy"),
                _Placement(rank, world, device), start=start, hooks=[recorder])
    # Always a last checkpoint, also when resumed at the end: fit()'s Result then
    # carries this run's placement-group id (see runtime.workarounds.release_placement_group).
    save(snapshot(cfg["steps"]), cfg["steps"], recorder.loss)
    return {k: np.stack(v, axis=1) if v else np.zeros((len(pos), 0)) for k, v in rec.items()}, start


class _Placement:
    """Rank, world size and device: all :func:`train_steps` asks of its runtime."""

    def __init__(self, rank: int, world: int, device: Any):
        self.rank, self.world, self.device = rank, world, device


class _Recorder:
    """The proxy's step hook: statistics at the log/gradient points, checkpoints at
    :func:`save_steps` (the last step's checkpoint is written after the loop)."""

    def __init__(self, cfg: dict, model: Any, shard: tuple, rec: dict[str, list[np.ndarray]],
                 world: int, save: SaveFn, snapshot: Callable[[int], dict]):
        self.cfg, self.model, self.shard, self.rec, self.world = cfg, model, shard, rec, world
        self.save, self.snapshot = save, snapshot
        self.log_at = set(checkpoint_steps(cfg["steps"], cfg["log_points"]))
        self.grad_at = set(checkpoint_steps(cfg["steps"], cfg["grad_checkpoints"]))
        self.save_at = set(save_steps(cfg))
        self.loss = float("nan")

    def __call__(self, done: int, loss: float) -> None:
        self.loss = loss
        xs, ys, ids = self.shard
        for which, at in (("log", self.log_at), ("grad", self.grad_at),
                          ("last", {self.cfg["steps"]})):
            if done in at:
                for key, val in measure_stats(self.cfg, self.model, xs, ys, ids,
                                              tuple(self.cfg["stats"]), which,
                                              self.world).items():
                    self.rec[key].append(np.asarray(val, dtype=np.float64))
        if done in self.save_at and done < self.cfg["steps"]:
            self.save(self.snapshot(done), done, loss)


def _state(inner: Any, opt: Any, gen: Any, label_gen: Any, rec: dict[str, list[np.ndarray]],
           step: int, world: int, n_local: int) -> dict[str, Any]:
    """Everything a resumed rank needs: weights, optimizer, random streams, records."""
    return {"model": inner.state_dict(), "opt": opt.state_dict(), "step": step, "world": world,
            "gen": gen.get_state(), "label_gen": label_gen.get_state(),
            **_records_state(rec, n_local)}


def rank_files(state: dict, rank: int) -> dict[str, dict]:
    """This rank's part of a checkpoint: ``{"rank<r>.pt": state}``, the model and
    optimizer on rank 0 only (every rank writes into the same checkpoint folder)."""
    own = state if rank == 0 else {k: v for k, v in state.items() if k not in ("model", "opt")}
    return {f"rank{rank}.pt": own}


def read_rank_state(directory: str, rank: int, world: int) -> dict | None:
    """This rank's resume state from a checkpoint directory, or None if it has none.

    None for checkpoints of an older proxy (no rank files) or another world size.
    """
    def load(r: int) -> dict | None:
        path = os.path.join(directory, f"rank{r}.pt")
        if not os.path.exists(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    state = load(rank)
    if state is None or int(state["world"]) != world:
        log.warning("proxy: checkpoint in %s is not one of %d rank(s); starting over", directory, world)
        return None
    if rank != 0:
        shared = load(0)
        if shared is None:
            return None
        state.update(model=shared["model"], opt=shared["opt"])
    return state
