"""The pipeline: encode -> embed -> proxy -> score/select -> sweep -> report.

``run_pipeline(cfg, fresh)`` is what ``python -m orchestrator.run`` calls, locally
(starts a Ray instance) or inside ``ray job submit`` (joins the job's cluster); with
``resources.executor: local`` every stage runs in this process, without Ray
(:mod:`orchestrator.runtime.executor`).
Every stage writes content-addressed artifacts to the cache, so a rerun of the same
command reuses everything that exists and trains only the trials without a result;
``fresh=True`` rebuilds every artifact and retrains every trial of this config.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from orchestrator.config import Config
from orchestrator.config.checks import circularity_warnings
from orchestrator.progress import say
from orchestrator.runtime.executor import Executor, open_executor
from orchestrator.runtime.resources import describe
from orchestrator.stages.embed import (Reference, check_embedders, ensure_embeddings,
                                       ensure_reference, ensure_trained_spaces)
from orchestrator.stages.encode import ensure_latents, ensure_vqvae
from orchestrator.stages.export import INDEX, SUBSETS, export_subsets, log_subsets
from orchestrator.stages.proxy import ensure_proxy_stats
from orchestrator.stages.report import build_report
from orchestrator.stages.score import (DatasetArtifacts, build_subsets, reliability_metrics,
                                       reliability_section, score_reliability)
from orchestrator.stages.sweep import build_specs, is_done, run_sweep
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.lock import RunLock
from orchestrator.storage.tables import Table
from orchestrator.tracking import (check_tracking_server, log_report, mlflow_ui_command,
                                   sweep_reporter)
from orchestrator.tracking.live import live_logger
from orchestrator.until import describe as describe_plan
from orchestrator.until import (evaluates, needs_latents, reaches, scoring_only, stage_config,
                                stage_plan)

log = logging.getLogger(__name__)


def prepare_datasets(cache: ArtifactCache, cfg: Config, executor: Executor, fresh: bool,
                     until: str = "report") -> dict:
    """Run encode, embed and proxy for every dataset, as far as ``--until`` goes and as the
    methods need them (:mod:`orchestrator.until`); returns DatasetArtifacts by name."""
    arts = {}
    ecfg = stage_config(cfg, until)   # up to select: the methods' embedders only
    latents = needs_latents(cfg, until)
    for ds in cfg.data.datasets:
        t0 = time.time()
        source = executor.source(ds)
        if source.skipped:
            say(f"{ds.name}: skipped {len(source.skipped)} unreadable file(s), e.g. "
                 f"{source.skipped[0].path}: {source.skipped[0].reason}")
        count = "an unknown number of" if source.count is None else source.count
        say(f"{ds.name}: {count} images, fingerprint {source.fingerprint[:12]}")
        vq = ensure_vqvae(cache, cfg, source, ds, executor, fresh) if latents else ""
        lat = ensure_latents(cache, cfg, source, ds, vq or None, executor, fresh)
        samples = Table(cache, lat)
        num_classes = int(samples.meta.get("num_classes", source.num_classes or 0))
        say(f"{ds.name}: encode done: {samples.rows} images, {num_classes} classes "
             f"({time.time() - t0:.0f}s)")
        t1 = time.time()
        trained = ensure_trained_spaces(cache, ecfg, source, ds, fresh, executor, num_classes)
        emb = ensure_embeddings(cache, ecfg, source, ds, executor, fresh, trained, samples.rows)
        ref = (ensure_reference(cache, cfg, ds, executor, fresh, trained) if evaluates(until)
               else Reference({}, "not needed before the sweep", 0))
        if emb or ref.keys:
            say(f"{ds.name}: embed done: {', '.join(emb)}; held-out reference: {ref.origin}, "
                 f"{ref.size} images ({time.time() - t1:.0f}s)")
        t1 = time.time()
        proxy = {}
        for seed in cfg.experiment.seeds if reaches(until, "proxy") else ():  # one per seed
            key = ensure_proxy_stats(cache, cfg, ds, lat, num_classes, executor, fresh, seed)
            if key:
                proxy[seed] = key
        if proxy:
            say(f"{ds.name}: proxy statistics done ({time.time() - t1:.0f}s)")
        arts[ds.name] = DatasetArtifacts(ds.name, source.fingerprint, num_classes, vq, lat,
                                         emb, proxy or None, trained, ref.keys, ref.origin,
                                         ref.size)
    return arts


def run_pipeline(cfg: Config, fresh: bool = False, until: str = "report") -> int:
    """Run every stage up to ``until`` (``--until``, :mod:`orchestrator.until`); returns 0
    when every trial finished (or the run stopped before training), 1 otherwise.

    Holds ``experiment.output_dir``'s :class:`RunLock` from before the first check
    until it returns (also on an exception or Ctrl-C).

    Raises:
        OutputLocked: another run holds the output directory.
        TrackingUnavailable: an ``http(s)://`` MLflow server does not answer.
    """
    with RunLock(cfg.experiment.output_dir):
        return _run_stages(cfg, fresh, until)


def _stopped(until: str, t_start: float, code: int = 0) -> int:
    """The early end of a ``--until`` run."""
    say(f"--until {until}: done; total {time.time() - t_start:.0f}s")
    return code


def _export(cache: ArtifactCache, cfg: Config, arts: dict, subsets: dict, fresh: bool) -> None:
    """Write ``<output_dir>/subsets/`` and log it to MLflow (stages/export.py)."""
    rows = export_subsets(cache, cfg, arts, subsets)
    log_subsets(cfg, rows, fresh)
    print(f"subsets: {cfg.experiment.output_dir}/{SUBSETS}/{INDEX} ({len(rows)} subset files)",
          flush=True)


def _run_stages(cfg: Config, fresh: bool, until: str = "report") -> int:
    t_start = time.time()
    check_tracking_server(cfg.mlflow.tracking_uri)
    check_embedders(stage_config(cfg, until))
    say(describe_plan(stage_plan(cfg, until)))
    for line in circularity_warnings(cfg) if evaluates(until) else ():
        say(line)
    cache = ArtifactCache(cfg.storage.cache_dir)
    with open_executor(cfg.resources) as executor:
        say(f"{cfg.experiment.name}: {executor.name} executor; {describe(executor.plan)}")
        say(f"cache {cfg.storage.cache_dir}; Ray storage {cfg.storage.ray_storage}"
             + ("; --fresh: rebuilding everything" if fresh else ""))
        arts = prepare_datasets(cache, cfg, executor, fresh, until)
        if not reaches(until, "score"):
            return _stopped(until, t_start)
        t1 = time.time()

        def in_tasks(fn: Any, calls: list[tuple]) -> list:
            return executor.run_tasks(fn, calls, fn.__name__)

        subsets = build_subsets(cache, cfg if reaches(until, "select") else scoring_only(cfg),
                                arts, fresh, in_tasks)
        say(f"score+select: {len(subsets)} subset(s) ({time.time() - t1:.0f}s)")
        if not reaches(until, "select"):
            return _stopped(until, t_start)
        _export(cache, cfg, arts, subsets, fresh)
        if not reaches(until, "sweep"):
            return _stopped(until, t_start)
        specs = build_specs(cache, cfg, arts, subsets, fresh, in_tasks)
        t1 = time.time()
        reporter = sweep_reporter(cfg, fresh)   # the trial runs appear in MLflow as they start
        errors = run_sweep(cache, cfg, specs, executor, fresh, live_logger(reporter, specs))
        say(f"sweep done ({time.time() - t1:.0f}s)")
        if not reaches(until, "report"):
            return _stopped(until, t_start, 1 if errors else 0)
        rel_rows = score_reliability(cache, cfg, arts, subsets)
        markdown, report = build_report(cache, cfg, specs,
                                        reliability_section(cache, cfg, arts, subsets, rel_rows))
        log_report(reporter, report, failed=bool(errors), metrics=reliability_metrics(rel_rows))
    print(f"\nResults ({cfg.experiment.name}, mean ± std over seeds):\n")
    print(markdown, flush=True)
    if errors:
        by_key = {s.key: s.trial.name for s in specs}
        for key, err in errors.items():
            print(f"error: trial {by_key.get(key, key)} failed: {err}", file=sys.stderr)
    print(f"report: {cfg.experiment.output_dir}/report/results.md (.csv, ratio_*.png)")
    print(f"MLflow: {mlflow_ui_command(cfg.mlflow.tracking_uri)}")
    n_done = sum(is_done(cache, s) for s in specs)
    say(f"total {time.time() - t_start:.0f}s; {n_done}/{len(specs)} trials done")
    return 0 if n_done == len(specs) else 1
