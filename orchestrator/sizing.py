"""Size a run before launching it: the work of each stage and its cost in CPU- or GPU-hours.

``--dry-run`` prints :func:`format_estimate`. The work is counted from the config (steps,
images, trials, samples); the cost divides it by throughputs MEASURED on this code,
committed in ``orchestrator/throughputs.yaml`` (each with its command, machine, date and
load). A unit of work whose configuration (model, shape, batch, device, ...) was never
measured is printed as "not measured", never extrapolated. The units:

| kind | work unit | cost keys |
|---|---|---|
| ``vqvae_train`` | training steps | preset, resolution, batch, device |
| ``vqvae_encode`` / ``vqvae_decode`` | images | preset, resolution, device |
| ``embed`` | images | embedder, resolution, device |
| ``dit_train`` | training steps | model, latent, batch, device |
| ``stats_loss`` / ``stats_grad`` | sample x draw (per-sample loss / gradient) | model, latent, device |
| ``dit_sample`` | sample x ODE step (CFG as configured, Heun or Euler) | model, latent, method, device |

Rates are per CPU thread or per GPU: CPU-hours = thread-hours, GPU-hours = GPU-hours at
one GPU; more workers shorten the wall time, not the hours (assuming linear scaling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.plan import TrialPlan
from orchestrator.config.schema import TRAINED_SPACE, Config
from orchestrator.data.sources import check_dataset, count_note, reference_count

THROUGHPUTS = Path(__file__).with_name("throughputs.yaml")
# Full split sizes of the built-in sources (facts about the datasets, used when a config
# sets no `limit` and the source cannot count cheaply, e.g. a bucket).
SPLIT_SIZES = {("fashion_mnist", "train"): 60000, ("fashion_mnist", "test"): 10000,
               ("celeba_hq", "train"): 30000, ("imagenet", "train"): 1281167,
               ("imagenet", "val"): 50000}


@dataclass(frozen=True)
class Work:
    """``amount`` units of one kind of work, costed by the table entry matching ``key``."""

    kind: str
    amount: float
    key: dict[str, Any]


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    scope: str                 # dataset name or "all trials"
    work: str                  # human-readable amounts
    parts: tuple[Work, ...]
    hours: float | None        # the measured parts' hours; None: no part measured
    missing: tuple[str, ...]   # descriptions of the unmeasured parts (empty: complete)


def load_throughputs(path: Path | str = THROUGHPUTS) -> list[dict[str, Any]]:
    with open(path) as f:
        return list(yaml.safe_load(f)["entries"])


def rate_for(work: Work, table: list[dict[str, Any]]) -> float | None:
    """Units/s of the entry whose kind and keys all equal ``work``'s, else None."""
    for e in table:
        if e["kind"] == work.kind and all(e.get(k) == v for k, v in work.key.items()):
            return float(e["per_s"])
    return None


def latent_shape(preset: str, resolution: int) -> list[int] | None:
    """``[C, h, w]`` of a ``vq-f<f>-c<c>`` preset, or None for other names."""
    m = re.fullmatch(r"vq-f(\d+)-c(\d+)", preset)
    if not m:
        return None
    f, c = int(m.group(1)), int(m.group(2))
    return [c, resolution // f, resolution // f]


def dataset_images(ds: Any) -> int | None:
    """Images of a dataset entry: its limit, a cheap count, or the split's known size."""
    if ds.limit:
        return int(ds.limit)
    try:
        n = check_dataset(ds, f"data.datasets[{ds.name}]")
    except Exception:   # unreachable path or bucket: fall back to the split size
        n = None
    return n if n is not None else SPLIT_SIZES.get((ds.source, ds.split or "train"))


def _count_note(ds: Any) -> str:
    """Why a dataset's image count is unknown before the run, in words (a remote folder
    counted from a bounded listing, a streaming source counted as it is read)."""
    try:
        return count_note(ds)
    except Exception:   # unknown source name (reported by the config checks)
        return "unknown (set data.datasets[].limit)"


def _reference_images(ds: Any, cap: int) -> int:
    """Images of the held-out reference (capped at ``eval.num_real``); the cap when unknown."""
    try:
        n = reference_count(ds, cap)
    except Exception:   # unreachable path or bucket
        n = None
    return int(n) if n is not None else int(cap)


def _needed_embedders(cfg: Config, ds_name: str) -> list[str]:
    names = list(cfg.embed.embedders)
    names += [m.build_pruner(ds_name).embedder for m in cfg.pruning.methods]
    names += list(cfg.eval.embedders)   # evaluation spaces embed the training set too
    return list(dict.fromkeys(n for n in names if n))


def _needed_stats(cfg: Config, ds_name: str) -> set[str]:
    return {s for m in cfg.pruning.methods for s in m.build_pruner(ds_name).needs_stats}


def _stage(stage: str, scope: str, work: str, parts: list[Work], table: list[dict]) -> StageEstimate:
    hours, missing = None, []
    for p in parts:
        r = rate_for(p, table)
        if r is None:
            missing.append(f"{p.kind} {p.key}")
        else:
            hours = (hours or 0.0) + p.amount / r / 3600.0
    return StageEstimate(stage, scope, work, tuple(parts), hours, tuple(missing))


def estimate(cfg: Config, table: list[dict[str, Any]] | None = None,
             images: dict[str, int | None] | None = None) -> list[StageEstimate]:
    """Per-stage work and cost of ``cfg``.

    Args:
        cfg: the resolved config.
        table: throughput entries (default: ``throughputs.yaml``).
        images: dataset name -> image count (default: :func:`dataset_images`).
    """
    table = load_throughputs() if table is None else table
    dev = "gpu" if cfg.resources.use_gpu else "cpu"
    ae, out = cfg.autoencoder, []
    trials = TrialPlan.from_config(cfg).trials
    for ds in cfg.data.datasets:
        n = (images or {}).get(ds.name) if images is not None else dataset_images(ds)
        if n is None:
            out += [StageEstimate(st, ds.name, f"image count {_count_note(ds)}",
                                  (), None, ("image count",))
                    for st in ["encode", "embed"] + (["proxy"] if _needed_stats(cfg, ds.name) else [])]
            continue
        res, lat = ds.resolution, latent_shape(ae.preset, ds.resolution)
        steps = 0 if ae.checkpoint else ae.train_steps
        parts = [Work("vqvae_train", steps, {"preset": ae.preset, "resolution": res,
                                             "batch": ae.batch_size, "device": dev})] if steps else []
        parts.append(Work("vqvae_encode", n, {"preset": ae.preset, "resolution": res, "device": dev}))
        out.append(_stage("encode", ds.name, f"VQ-VAE {steps} steps (batch {ae.batch_size}) + "
                          f"{n} images encoded", parts, table))
        embs = _needed_embedders(cfg, ds.name)
        ref = _reference_images(ds, cfg.eval.num_real)
        parts = [Work("embed", n + ref * (e in cfg.eval.embedders),
                      {"embedder": e, "resolution": res, "device": dev}) for e in embs]
        if TRAINED_SPACE in cfg.eval.embedders:
            cc = cfg.eval.classifier
            parts.append(Work("classifier_train", cc.steps, {"resolution": res, "batch": cc.batch_size,
                                                             "device": dev}))
        out.append(_stage("embed", ds.name, f"{n} images x {len(embs)} embedders ({', '.join(embs)})"
                          f" + {ref} held-out reference images x {len(cfg.eval.embedders)} evaluation "
                          f"spaces" + (f" + {TRAINED_SPACE} space {cfg.eval.classifier.steps} steps"
                                       if TRAINED_SPACE in cfg.eval.embedders else ""), parts, table))
        stats, px = _needed_stats(cfg, ds.name), cfg.proxy
        if stats:
            key = {"model": px.model, "latent": lat, "device": dev}
            loss = (px.log_points * n * px.draws * ("loss_traj" in stats)
                    + n * px.el2n_draws * ("loss_last" in stats))
            # GraNd: one gradient per sample-draw per checkpoint, of the output layer or of
            # all parameters (proxy.grand_params; throughputs measured for each); MoSo: the
            # mean gradient plus one more per sample-draw, all parameters
            # (pruning.stats.gradient_sum, moso_terms)
            grand = px.grad_checkpoints * n * px.grand_draws * ("grad_norm" in stats)
            moso = px.grad_checkpoints * n * 2 * px.draws * ("moso" in stats)
            full_grads = moso + (grand if px.grand_params == "all" else 0)
            output_grads = grand if px.grand_params != "all" else 0
            parts = [Work("dit_train", px.steps, {**key, "batch": px.batch_size})]
            parts += [Work("stats_loss", loss, key)] if loss else []
            parts += ([Work("stats_grad", output_grads, {**key, "params": "output"})]
                      if output_grads else [])
            parts += [Work("stats_grad", full_grads, {**key, "params": "all"})] if full_grads else []
            grad = grand + moso
            out.append(_stage("proxy", ds.name, f"{px.model} {px.steps} steps (batch {px.batch_size}) + "
                              f"{loss} loss and {grad} gradient sample-draws", parts, table))
    lat = latent_shape(ae.preset, cfg.data.datasets[0].resolution) if cfg.data.datasets else None
    m, t, s = cfg.model.preset, len(trials), cfg.sample
    out.append(_stage("sweep", "all trials", f"{t} trials x {cfg.train.steps} steps "
                      f"(batch {cfg.train.batch_size}) + {t} x {s.num_samples} samples x {s.steps} "
                      f"{s.method} steps",
                      [Work("dit_train", t * cfg.train.steps,
                            {"model": m, "latent": lat, "batch": cfg.train.batch_size, "device": dev}),
                       Work("dit_sample", t * s.num_samples * s.steps,
                            {"model": m, "latent": lat, "method": s.method, "device": dev})], table))
    res = cfg.data.datasets[0].resolution if cfg.data.datasets else None
    out.append(_stage("eval", "all trials", f"{t} x {s.num_samples} samples decoded + embedded "
                      f"({', '.join(cfg.eval.embedders)})",
                      [Work("vqvae_decode", t * s.num_samples, {"preset": ae.preset, "resolution": res,
                                                                "device": dev})]
                      + [Work("embed", t * s.num_samples, {"embedder": e, "resolution": res,
                                                           "device": dev})
                         for e in cfg.eval.embedders], table))
    return out


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def format_estimate(cfg: Config, estimates: list[StageEstimate]) -> str:
    """The ``--dry-run`` table: stage, scope, work, cost (or "not measured: ...")."""
    unit = "GPU-h" if cfg.resources.use_gpu else "CPU-h"
    lines = [f"estimated cost (throughputs measured on this code: {THROUGHPUTS.name}; {unit} at one "
             f"{'GPU' if cfg.resources.use_gpu else 'CPU thread'}, linear scaling assumed)"]
    for e in estimates:
        cost = f"{_hours(e.hours)} {unit}" if e.hours is not None else ""
        if e.missing:
            cost += (" + " if cost else "") + "not measured: " + "; ".join(e.missing)
        lines.append(f"  {e.stage:<7} {e.scope:<10} {e.work}: {cost}")
    known = [e.hours for e in estimates if e.hours is not None]
    gaps = [f"{e.stage}[{e.scope}]" for e in estimates if e.missing]
    lines.append(f"  total   {_hours(sum(known))} {unit}"
                 + (f" for the measured parts; not measured: {', '.join(gaps)}" if gaps else ""))
    return "\n".join(lines)
