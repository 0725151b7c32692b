"""Benchmark: wall time and peak memory of each pipeline stage at quickstart scale.

Each stage runs in its own 'spawn' child process (so its peak RSS is its own), in
process and without Ray, calling what the stage's Ray code calls:

* encode: VQ-VAE training (``models.vqvae.vqvae_train_step``, the config's steps and
  batch) + latent scale + encoding every image (``VQVAE.encode``);
* embed: every embedder the config needs (``orchestrator.stages.embed.needed_embedders``)
  over all images, in ``embed.batch_size`` batches;
* proxy: ``orchestrator.training.proxy_stats.train_proxy`` (the proxy stage's own loop
  and statistics, world 1, no checkpoints);
* score: ``orchestrator.stages.score.build_subsets`` (every method scored, every ratio
  selected; no Ray in it);
* trial: one sweep trial: ``orchestrator.training.trial.train_model`` (the one DiT loop,
  on a ``LocalRuntime``: no Ray Train, checkpoints built but not kept), then
  ``orchestrator.training.evaluate.generate`` and ``evaluate``.

Stages hand their outputs on through an ``ArtifactCache`` in a private /tmp dir.
Threads: 2 for the stages that run alone in the pipeline (solo / actor threads on 2
CPUs); the trial uses the plan's per-trial threads (two trials run side by side).

    .venv/bin/python -m benchmarks.bench_stages [--set data.datasets[0].limit=2000 ...]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from benchmarks._util import REPO, header, run_in_child, scratch_dir

STAGES = ("encode", "embed", "proxy", "score", "trial")


def write_table(cache: Any, key: str, columns: dict[str, np.ndarray]) -> None:
    """One stage's per-sample arrays as a one-part table (the pipeline writes parts in its
    workers: ``orchestrator/storage/tables.py``)."""
    from orchestrator.storage.tables import finish_table, write_part

    finish_table(cache, key, [write_part(cache, key, "part-0", columns)])


def _setup(overrides: list[str], root: str) -> tuple[Any, Any, Any, Any]:
    """(config, dataset entry, cache, DatasetArtifacts keys) shared by the stages."""
    from orchestrator.config import load_config
    from orchestrator.weights import needed_embedders
    from orchestrator.stages.score import DatasetArtifacts
    from orchestrator.storage.cache import ArtifactCache

    # the classifier space is trained by the pipeline (bench_classifier.py times it): the
    # stages here are timed in the pretrained spaces only
    base = ["eval.embedders=[effnet_lite0]", "eval.primary=effnet_lite0"]
    cfg = load_config("experiments/quickstart.yaml",
                      [*base, *overrides, f"experiment.output_dir={root}/out"],
                      base_dir=REPO)
    cache = ArtifactCache(os.path.join(root, "cache"))
    ds = cfg.data.datasets[0]
    key = lambda what: cache.key("bench", 1, what=what)  # noqa: E731
    arts = DatasetArtifacts(ds.name, "bench", 10, key("vqvae"), key("latents"),
                            {e: key(f"embed-{e}") for e in needed_embedders(cfg)},
                            {s: key(f"proxy-{s}") for s in cfg.experiment.seeds},
                            reference={e: key(f"reference-{e}") for e in cfg.eval.embedders})
    return cfg, ds, cache, arts


def stage_encode(overrides: list[str], root: str) -> str:
    import tempfile

    import torch

    from models.vqvae import (build_vqvae, fit_latent_scale, images_to_model, save_vqvae,
                              vqvae_train_step)
    from orchestrator.data.sources import load_arrays

    torch.set_num_threads(2)
    cfg, ds, cache, arts = _setup(overrides, root)
    ae, src = cfg.autoencoder, load_arrays(ds)
    torch.manual_seed(ds.seed)
    model = build_vqvae(ae.preset)
    opt = torch.optim.Adam(model.parameters(), lr=ae.lr)
    rng = np.random.default_rng(ds.seed)
    for _ in range(ae.train_steps):
        batch = src.images[rng.integers(0, len(src.images), ae.batch_size)]
        vqvae_train_step(model, images_to_model(batch), opt)
    model.eval()
    with torch.no_grad():
        fit_latent_scale(model, images_to_model(src.images[-512:]))
        bs = ae.batch_size * 4
        lat = torch.cat([model.encode(images_to_model(src.images[s:s + bs]))
                         for s in range(0, len(src.images), bs)])
    with tempfile.TemporaryDirectory() as d:
        save_vqvae(model, os.path.join(d, "vqvae.pt"), ae.preset)
        cache.save_bytes(arts.vqvae, open(os.path.join(d, "vqvae.pt"), "rb").read())
    write_table(cache, arts.latents, {"id": src.ids, "key": src.ids.astype(str).astype(object),
                                      "uri": src.ids.astype(str).astype(object),
                                      "label": src.labels, "latent": lat.numpy()})
    return f"{ae.train_steps} VQ-VAE steps, {tuple(lat.shape)} latents"


def stage_embed(overrides: list[str], root: str) -> str:
    import torch

    from models import build_embedder
    from orchestrator.data.sources import load_arrays, load_reference

    torch.set_num_threads(2)
    cfg, ds, cache, arts = _setup(overrides, root)
    src, bs = load_arrays(ds), cfg.embed.batch_size
    ref = load_reference(ds, cfg.eval.num_real)
    for name, key in arts.embeddings.items():
        emb = build_embedder(name, weights=cfg.embed.weights.get(name))
        feats = np.concatenate([emb(src.images[s:s + bs]) for s in range(0, len(src.images), bs)])
        write_table(cache, key, {"id": src.ids, "features": feats.astype(np.float32)})
        if name in arts.reference:   # the held-out reference, embedded by the eval embedders
            rf = np.concatenate([emb(ref.images[s:s + bs]) for s in range(0, len(ref.images), bs)])
            write_table(cache, arts.reference[name], {"id": ref.ids, "label": ref.labels,
                                                      "features": rf.astype(np.float32)})
    return f"{len(src.images)} images + {len(ref.images)} reference x {', '.join(arts.embeddings)}"


def stage_proxy(overrides: list[str], root: str) -> str:
    import torch
    from dataclasses import asdict

    from orchestrator.stages.proxy import needed_stats, read_latents
    from orchestrator.training.proxy_stats import train_proxy

    torch.set_num_threads(2)
    cfg, ds, cache, arts = _setup(overrides, root)
    pc, stats = asdict(cfg.proxy), needed_stats(cfg)
    data = read_latents(cache, arts.latents)
    seed = cfg.experiment.seeds[0]   # the pipeline trains one proxy per experiment seed
    wcfg = {**pc, "stats": list(stats), "n": int(data["ids"].shape[0]), "seed": seed,
            "conditional": ds.conditional, "num_classes": 10}
    rec, _ = train_proxy(wcfg, data, 0, 1, torch.device("cpu"), lambda m: m, None,
                         lambda *_: None)   # the pipeline's loop, without Ray or checkpoints
    for key in arts.proxy.values():
        cache.save_arrays(key, **rec)
    return f"{pc['steps']} proxy steps on {wcfg['n']} latents, stats {', '.join(stats)}"


def stage_score(overrides: list[str], root: str) -> str:
    from orchestrator.stages.score import build_subsets

    cfg, _, cache, arts = _setup(overrides, root)
    subsets = build_subsets(cache, cfg, {arts.name: arts}, fresh=True)
    return f"{len(cfg.pruning.methods)} methods -> {len(subsets)} subsets"


def stage_trial(overrides: list[str], root: str) -> str:
    import ray  # noqa: F401  (imported by the trial worker too; part of its footprint)
    import torch

    from orchestrator.runtime.resources import plan_resources
    from orchestrator.stages.score import build_subsets
    from orchestrator.stages.sweep import build_specs
    from orchestrator.training.evaluate import evaluate, generate, vqvae_from_cache
    from orchestrator.training.loop import LocalRuntime
    from orchestrator.training.spaces import local_weights
    from orchestrator.storage.tables import Table
    from orchestrator.training.trial import load_inputs, train_model

    cfg, _, cache, arts = _setup(overrides, root)
    threads = plan_resources(cfg.resources, {"CPU": float(os.cpu_count() or 1)}).torch_threads
    torch.set_num_threads(threads)
    subsets = build_subsets(cache, cfg, {arts.name: arts}, False)
    spec = build_specs(cache, cfg, {arts.name: arts}, subsets)[-1]
    data, seed, cpu = load_inputs(cache, spec), spec.trial.seed, torch.device("cpu")
    t0 = time.perf_counter()
    # the trial's own loop (training/trial.py), on an in-process runtime: no Ray, and its
    # checkpoints are built but not kept
    ema_model, _, _ = train_model(spec, data, LocalRuntime(keep=False))
    t1 = time.perf_counter()
    images = generate(vqvae_from_cache(cache, spec.inputs.vqvae), ema_model, spec.sample, seed,
                      spec.conditional, spec.num_classes, tuple(data["latents"].shape[1:]), cpu)
    t2 = time.perf_counter()
    features = {n: Table(cache, k).column("features") for n, k in spec.inputs.features.items()}
    refs = {n: Table(cache, k).read(["label", "features"]) for n, k in spec.inputs.reference.items()}
    with local_weights(cache, spec.inputs.weights) as trained:
        metrics = evaluate(images, features, data["labels"], data["subset"], spec.eval, seed,
                           spec.num_classes, "cpu", weights={**spec.eval_weights, **trained},
                           reference={n: r["features"] for n, r in refs.items()},
                           reference_labels=refs[spec.eval.primary]["label"])
    t3 = time.perf_counter()
    n_train = len(data["subset"])
    return (f"{spec.trial.name} on {n_train} latents, {threads} thread(s): train {t1 - t0:.1f}s, "
            f"sample {t2 - t1:.1f}s ({len(images)} images), eval {t3 - t2:.1f}s ({len(metrics)} metrics)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="quickstart.yaml override, e.g. data.datasets[0].limit=2000 (repeatable)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                   help="a later stage needs the earlier ones' outputs")
    args = p.parse_args()
    header("bench_stages", vars(args))
    root = scratch_dir("stages")
    fns = {"encode": stage_encode, "embed": stage_embed, "proxy": stage_proxy, "score": stage_score,
           "trial": stage_trial}
    rows = []
    for name in args.stages:
        r = run_in_child(fns[name], args.overrides, root)
        if r["status"] != "ok":
            raise RuntimeError(f"stage {name}: {r['result']}")
        print(f"{name}: {r['wall_s']:.1f}s, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(+{r['peak_rss_mib'] - r['base_rss_mib']:.0f}); {r['result']}", flush=True)
        rows.append((name, r))
    print(f"\nquickstart.yaml{' with ' + ', '.join(args.overrides) if args.overrides else ''}; "
          "one spawn child per stage, wall = the stage's call, peak RSS = ru_maxrss of the child "
          "(interpreter + imports + stage), delta = above the bare spawned interpreter\n")
    print("| stage | wall (s) | peak RSS (MiB) | delta (MiB) | what ran |")
    print("|---|---:|---:|---:|---|")
    for name, r in rows:
        print(f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_rss_mib'] - r['base_rss_mib']:.0f} | {r['result']} |")
    total = sum(r["wall_s"] for _, r in rows)
    print(f"\ntotal {total:.0f}s; largest peak {max(r['peak_rss_mib'] for _, r in rows):.0f} MiB")


if __name__ == "__main__":
    main()
