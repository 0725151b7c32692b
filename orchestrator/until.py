"""What ``python -m orchestrator.run CONFIG --until STAGE`` runs, and what it skips.

The pipeline's stages in order: ``encode -> embed -> proxy -> score -> select -> sweep ->
report`` (the subset export runs right after ``select``, in every run that selects).
``--until STAGE`` stops after STAGE; within that range a stage still runs only when the
configured methods need it:

- ``encode`` always runs: its table is the dataset's samples table (``id, key, uri,
  label`` of the good rows) every later stage and the export read. It trains the VQ-VAE
  and adds the latents only when something needs them (:func:`needs_latents`).
- ``embed`` computes the features the pruning methods select in (``clustering`` on
  ``pixels``, ...). The evaluation inputs (the evaluation spaces' features, the
  ``classifier`` space's training, the held-out reference) are embedded only when the
  run goes on to ``sweep``: ``--until select`` needs none of them.
- ``proxy`` runs only when a method needs the proxy's statistics (``el2n``, ``grand``, ...).

Pure functions of the config: ``--dry-run`` prints :func:`format_plan` without Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from orchestrator.config.plan import TrialPlan
from orchestrator.config.schema import Config

UNTIL = ("encode", "embed", "proxy", "score", "select", "sweep", "report")
PLAN_STAGES = ("encode", "embed", "proxy", "score", "select", "export", "sweep", "report")


@dataclass(frozen=True)
class StageStep:
    """One line of the plan: ``stage`` runs (``run``) or is skipped, and why (``why``)."""

    stage: str
    run: bool
    why: str


def reaches(until: str, stage: str) -> bool:
    """Whether a run ``--until until`` gets as far as ``stage`` (``export`` = ``select``)."""
    stage = "select" if stage == "export" else stage
    return UNTIL.index(stage) <= UNTIL.index(until)


def evaluates(until: str) -> bool:
    """Whether the run trains and evaluates trials (it needs the evaluation inputs)."""
    return reaches(until, "sweep")


def method_embedders(cfg: Config) -> list[str]:
    """Embedders the configured pruning methods select in, in config order."""
    names = [m.build_pruner(ds.name).embedder for m in cfg.pruning.methods
             for ds in cfg.data.datasets]
    return list(dict.fromkeys(n for n in names if n))


def method_stats(cfg: Config) -> list[str]:
    """Proxy statistics the configured pruning methods need (sorted)."""
    return sorted({s for m in cfg.pruning.methods for ds in cfg.data.datasets
                   for s in m.build_pruner(ds.name).needs_stats})


def needs_latents(cfg: Config, until: str) -> bool:
    """Whether ``--until until`` needs the VQ-VAE's latents: ``--until encode`` asks for
    them, the proxy trains on them, the sweep's trials do. Otherwise (e.g. random and
    clustering ``--until select``) the encode stage writes the samples table alone (key,
    uri, label of the good rows) and trains no VQ-VAE."""
    return (until == "encode" or evaluates(until)
            or (reaches(until, "proxy") and bool(method_stats(cfg))))


def stage_config(cfg: Config, until: str) -> Config:
    """``cfg`` as the encode and embed stages see it under ``--until until``.

    A run that goes on to ``sweep`` gets ``cfg`` itself. Before that, ``embed.embedders``
    holds only the methods' embedders (none under ``--until encode``) and there is no
    evaluation space: no classifier training, no weight check for the evaluation. Cache
    keys do not depend on these lists: the artifacts are those of a full run.
    """
    if evaluates(until):
        return cfg
    names = tuple(method_embedders(cfg)) if reaches(until, "embed") else ()
    return dataclasses.replace(cfg, embed=dataclasses.replace(cfg.embed, embedders=names),
                               eval=dataclasses.replace(cfg.eval, embedders=()))


def scoring_only(cfg: Config) -> Config:
    """``cfg`` without ratios and baseline: ``build_subsets`` then scores and selects nothing."""
    return dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, ratios=(),
                                                                baseline=False))


def _embed_step(cfg: Config, until: str) -> StageStep:
    embs = method_embedders(cfg)
    if evaluates(until):
        spaces = ", ".join(cfg.eval.embedders)
        return StageStep("embed", True, f"methods: {', '.join(embs) or 'none'}; evaluation "
                                        f"spaces: {spaces}; held-out reference")
    if not embs:
        return StageStep("embed", False, "no configured method selects in an embedding")
    return StageStep("embed", True, f"methods: {', '.join(embs)} (evaluation spaces and "
                                    "held-out reference skipped: no sweep)")


def stage_plan(cfg: Config, until: str = "report") -> list[StageStep]:
    """Every stage of :data:`PLAN_STAGES`, whether ``--until until`` runs it and why.

    Raises:
        ValueError: ``until`` is not one of :data:`UNTIL`.
    """
    if until not in UNTIL:
        raise ValueError(f"--until: expected one of {', '.join(UNTIL)}, got {until!r}")
    methods = [m.label for m in cfg.pruning.methods]
    stats = method_stats(cfg)
    seeds = len(cfg.experiment.seeds)
    ratios = ", ".join(f"{r:g}" for r in cfg.pruning.ratios)
    trials = len(TrialPlan.from_config(cfg))
    reasons = {
        "encode": (True, "samples table (key, uri, label) and VQ-VAE latents"
                   if needs_latents(cfg, until) else
                   "samples table (key, uri, label) only: no VQ-VAE (no method needs latents)"),
        "proxy": (bool(stats), f"statistics {', '.join(stats)}, one proxy per seed" if stats
                  else "no configured method needs proxy statistics"),
        "score": (bool(methods), f"{', '.join(methods)} x {seeds} seed(s)" if methods
                  else "no pruning method configured"),
        "select": (True, f"ratios {ratios}" + (" + full-data baseline"
                                               if cfg.pruning.baseline else "")),
        "export": (True, f"{cfg.experiment.output_dir}/subsets/ (index.csv, one parquet "
                         "file per subset, scores.parquet)"),
        "sweep": (True, f"{trials} trials"),
        "report": (True, f"{cfg.experiment.output_dir}/report/ and MLflow"),
    }
    steps = []
    for stage in PLAN_STAGES:
        if not reaches(until, stage):
            steps.append(StageStep(stage, False, f"--until {until}"))
        elif stage == "embed":
            steps.append(_embed_step(cfg, until))
        else:
            steps.append(StageStep(stage, *reasons[stage]))
    return steps


def format_plan(cfg: Config, until: str = "report") -> str:
    """The plan as printed by ``--dry-run``: ``stage  run|skip  why`` lines."""
    lines = [f"stages (--until {until}):"]
    lines += [f"  {s.stage:<7} {'run ' if s.run else 'skip'}  {s.why}"
              for s in stage_plan(cfg, until)]
    return "\n".join(lines)


def describe(steps: list[StageStep]) -> str:
    """One log line: the stages that run, the ones skipped."""
    run = [s.stage for s in steps if s.run]
    skipped = [s.stage for s in steps if not s.run]
    return f"stages: {', '.join(run)}" + (f"; skipped: {', '.join(skipped)}" if skipped else "")
