"""The pipeline: encode -> embed -> proxy -> score/select -> sweep -> report.

``run_pipeline(cfg, fresh)`` is what ``python -m orchestrator.run`` calls, locally
(starts a Ray instance) or inside ``ray job submit`` (joins the job's cluster).
Every stage writes content-addressed artifacts to the cache, so a rerun of the same
command reuses everything that exists and trains only the trials without a result;
``fresh=True`` rebuilds every artifact and retrains every trial of this config.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from typing import Any

from orchestrator.cache import ArtifactCache
from orchestrator.config import Config, dump_yaml

log = logging.getLogger(__name__)


from orchestrator.ray_utils import say as _say


def prepare_datasets(cache: ArtifactCache, cfg: Config, plan: Any, fresh: bool) -> dict:
    """Run encode, embed and proxy for every dataset; returns DatasetArtifacts by name."""
    from orchestrator.embed import ensure_embeddings
    from orchestrator.encode import ensure_latents, ensure_vqvae
    from orchestrator.proxy import ensure_proxy_stats
    from orchestrator.score import DatasetArtifacts
    from orchestrator.sources import load_dataset

    arts = {}
    for ds in cfg.data.datasets:
        t0 = time.time()
        source = load_dataset(ds)
        if source.skipped:
            _say(f"{ds.name}: skipped {len(source.skipped)} unreadable file(s), e.g. "
                 f"{source.skipped[0].path}: {source.skipped[0].reason}")
        _say(f"{ds.name}: {source.count} images, {source.num_classes} classes, "
             f"fingerprint {source.fingerprint[:12]}")
        vq = ensure_vqvae(cache, cfg, source, ds, plan, fresh)
        lat = ensure_latents(cache, cfg, source, ds, vq, plan, fresh)
        _say(f"{ds.name}: encode done ({time.time() - t0:.0f}s)")
        t1 = time.time()
        emb = ensure_embeddings(cache, cfg, source, ds, plan, fresh)
        _say(f"{ds.name}: embed done: {', '.join(emb)} ({time.time() - t1:.0f}s)")
        t1 = time.time()
        proxy = ensure_proxy_stats(cache, cfg, ds, lat, source.num_classes, plan, fresh)
        if proxy:
            _say(f"{ds.name}: proxy statistics done ({time.time() - t1:.0f}s)")
        arts[ds.name] = DatasetArtifacts(ds.name, source.fingerprint, source.num_classes, vq, lat,
                                         emb, proxy)
    return arts


def check_embedders(cfg: Config) -> None:
    """Build every needed embedder once on the driver: a missing weight file is a
    one-line config error now, not a failure in each Ray actor and trial later."""
    from models import MissingWeightsError, build_embedder
    from orchestrator.config import ConfigError
    from orchestrator.embed import needed_embedders

    for name in needed_embedders(cfg):
        try:
            build_embedder(name, device="cpu", weights=cfg.embed.weights.get(name))
        except MissingWeightsError as e:
            raise ConfigError(f"embed.weights.{name}: {e}") from None


def report(cache: ArtifactCache, cfg: Config, specs: list[dict], errors: dict[str, str],
           fresh: bool = False) -> str:
    """Table (CSV + Markdown, printed), plots and MLflow logging; returns the Markdown."""
    from orchestrator import report as rep
    from orchestrator.sweep import fetch_files, load_results

    results = load_results(cache, specs)
    out_dir = os.path.join(tempfile.mkdtemp(prefix="prunediff-report-"))
    table = rep.comparison_table(results, [m.label for m in cfg.pruning.methods])
    paths = rep.write_table(table, out_dir)
    paths["trials"] = rep.write_trials(results, out_dir)      # per-seed values for verdicts
    plots = (rep.plot_methods_vs_ratio(table, out_dir) + rep.plot_metric_vs_ratio(table, out_dir)
             if len(table) else [])
    reporter = rep.MlflowReporter(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name,
                                  cfg.mlflow.artifact_location, cfg.config_hash(),
                                  f"{cfg.experiment.name}-sweep", reuse_parent=not fresh)
    logged = reporter.logged_trials()
    for res in results:
        if res["key"] in logged:
            continue
        tdir = os.path.join(out_dir, res["trial"]["name"])
        files = fetch_files(cache, res, tdir)
        if res.get("loss_curve"):
            files["loss_curve"] = rep.plot_loss_curve(res["loss_curve"], os.path.join(tdir, "loss_curve.png"),
                                                      res["trial"]["name"])
        reporter.log_trial({**res, "files": files})
    cfg_path = os.path.join(out_dir, "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(dump_yaml(cfg))
    params = {"config_hash": cfg.config_hash(), "n_trials": len(specs),
              "datasets": ",".join(d.name for d in cfg.data.datasets),
              "methods": ",".join(m.label for m in cfg.pruning.methods),
              "ratios": ",".join(str(r) for r in cfg.pruning.ratios),
              "seeds": ",".join(str(s) for s in cfg.experiment.seeds)}
    reporter.log_parent(params, [paths["csv"], paths["trials"], paths["markdown"], cfg_path, *plots],
                        "FINISHED" if not errors else "FAILED")
    _copy_outputs(cfg, [paths["csv"], paths["trials"], paths["markdown"], *plots])
    return open(paths["markdown"]).read()


def _copy_outputs(cfg: Config, files: list[str]) -> None:
    """Table and plots also land in <output_dir>/report/ (local dir or bucket)."""
    from orchestrator import fsutil

    fs, base = fsutil.filesystem(fsutil.join(cfg.experiment.output_dir, "report"))
    fs.create_dir(base, recursive=True)
    for path in files:
        with open(path, "rb") as src, fs.open_output_stream(f"{base}/{os.path.basename(path)}") as dst:
            dst.write(src.read())


def run_pipeline(cfg: Config, fresh: bool = False) -> int:
    """Run every stage; returns 0 when every trial finished, 1 otherwise."""
    from orchestrator.ray_utils import init_ray
    from orchestrator.resources import current_plan, describe
    from orchestrator.score import build_subsets
    from orchestrator.sweep import build_specs, run_sweep

    t_start = time.time()
    check_embedders(cfg)
    cache = ArtifactCache(cfg.storage.cache_dir)
    started = init_ray()
    try:
        import ray

        plan = current_plan(cfg.resources)
        _say(f"{cfg.experiment.name}: {describe(plan)}")
        _say(f"cache {cfg.storage.cache_dir}; Ray storage {cfg.storage.ray_storage}"
             + ("; --fresh: rebuilding everything" if fresh else ""))
        arts = prepare_datasets(cache, cfg, plan, fresh)
        t1 = time.time()
        subsets = build_subsets(cache, cfg, arts, fresh)
        _say(f"score+select: {len(subsets)} subset(s) ({time.time() - t1:.0f}s)")
        specs = build_specs(cache, cfg, arts, subsets)
        t1 = time.time()
        errors = run_sweep(cache, cfg, specs, plan, fresh)
        _say(f"sweep done ({time.time() - t1:.0f}s)")
        markdown = report(cache, cfg, specs, errors, fresh)
    finally:
        if started:
            ray.shutdown()
    print(f"\nResults ({cfg.experiment.name}, mean ± std over seeds):\n")
    print(markdown, flush=True)
    if errors:
        by_key = {s["key"]: s["trial"]["name"] for s in specs}
        for key, err in errors.items():
            print(f"error: trial {by_key.get(key, key)} failed: {err}", file=sys.stderr)
    from orchestrator.report import mlflow_ui_command

    print(f"report: {cfg.experiment.output_dir}/report/results.md (.csv, ratio_*.png)")
    print(f"MLflow: {mlflow_ui_command(cfg.mlflow.tracking_uri)}")
    from orchestrator.sweep import is_done

    n_done = sum(is_done(cache, s) for s in specs)
    _say(f"total {time.time() - t_start:.0f}s; {n_done}/{len(specs)} trials done")
    return 0 if n_done == len(specs) else 1
