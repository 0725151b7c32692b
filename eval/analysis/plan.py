"""The pre-registered analysis plan: which metrics, comparisons, margin and level.

The config's ``analysis:`` section (``orchestrator.config.schema.AnalysisConfig``) holds
the choices as metric *keys* and method *labels*; :func:`resolve_plan` turns them, with
the config's evaluation spaces and pruning methods, into a :class:`Plan` of concrete
column names and labels. The report stage and the results-page CLI
(:mod:`eval.analysis.report`) both resolve through here, and the plan is logged with
the run (:meth:`Plan.params`, :meth:`Plan.to_dict`), so the verdicts follow from it alone.

Pure Python; never imports the orchestrator or the models (the embedders' short names
are mirrored in :data:`SPACE_SHORT`, checked against ``models.EMBEDDERS`` by a test).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

FULL = "full"

# models.EMBEDDERS[name].short (the metric-key suffix); tests/test_analysis_config.py checks it
SPACE_SHORT: dict[str, str] = {"pixels": "pixels", "effnet_lite0": "effnet", "clip": "clip",
                               "dinov2": "dinov2", "inception": "fid", "classifier": "cls"}

# pruning.clustering.ClusteringPruner.PARAMS defaults (the paper's released code keeps the
# farthest samples, proportional quotas); tests/test_analysis_config.py checks them
CLUSTERING = "clustering"
CLUSTERING_DEFAULTS: dict[str, str] = {"embedder": "effnet_lite0", "keep": "farthest",
                                       "mode": "proportional"}

# metric keys whose value improves upwards; every other key improves downwards
HIGHER_IS_BETTER = ("f_score", "precision", "recall", "density", "coverage", "vendi")
# (d) "closer to the training data as more is removed": the direction of that claim
CLOSER_IS_HIGHER = ("mem_copy_rate", "mem_subset_copy_rate")

# the analysis: section's defaults (documented on AnalysisConfig)
DEFAULTS: dict[str, Any] = {
    "metrics": ("f_score", "fd"), "space": None, "trend_metrics": ("mem_nn_mean", "mem_copy_rate"),
    "baseline": "random", "contestant": None, "balanced": None, "high_ratio": 0.75,
    "margin": 0.10, "alpha": 0.05, "power": 0.80,
}


class AnalysisError(ValueError):
    """A plan or a table the analysis cannot use (one line; the CLI exits 2)."""


def metric_column(key: str, short: str) -> str:
    """``<key>_<short>``, except ``fd`` in Inception space, ``fid`` (orchestrator's rule)."""
    return "fid" if key == "fd" and short == "fid" else f"{key}_{short}"


def _is(column: str, keys: Sequence[str]) -> bool:
    return any(column == k or column.startswith(k + "_") for k in keys)


def lower_is_better(column: str) -> bool:
    """Direction of a metric column, by its key (see :data:`HIGHER_IS_BETTER`)."""
    return not _is(column, HIGHER_IS_BETTER)


def closer_is_higher(column: str) -> bool:
    """For (d): True when a higher value means closer to the training data (copy rates)."""
    return _is(column, CLOSER_IS_HIGHER)


@dataclass(frozen=True)
class Plan:
    """A resolved analysis: concrete columns and labels.

    Attributes:
        metrics: primary metric columns, e.g. ``("f_score_cls", "fd_cls")``.
        trend_metrics: (d)'s columns, e.g. ``("mem_nn_mean_cls", "mem_copy_rate_cls")``.
        space: the evaluation space of the verdicts (an embedder name).
        short: its metric-key suffix (``cls``).
        baseline: the label every method is compared with besides full data.
        contestant: (b)'s contestant (None: no code-default clustering variant ran).
        exploratory: the other clustering variants (their (b) rows are exploratory).
        balanced: (c)'s balanced clustering label (None: not in the run).
        circular: methods that select in ``space`` (marked; rewarded by construction).
        methods: every method label of the config, in config order.
        high_ratio: (a), (b) and the comparisons with ``baseline`` use ratios >= this.
        margin: (a)'s equivalence margin as a share of the full-data mean.
        alpha: family-wise error rate of each Holm family; also the TOST level.
        power: power of the minimal detectable effects.
    """

    metrics: tuple[str, ...]
    trend_metrics: tuple[str, ...]
    space: str
    short: str
    baseline: str = "random"
    contestant: str | None = None
    exploratory: tuple[str, ...] = ()
    balanced: str | None = None
    circular: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    high_ratio: float = 0.75
    margin: float = 0.10
    alpha: float = 0.05
    power: float = 0.80

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able), tuples as lists: the artifact logged with the run."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def params(self) -> dict[str, str]:
        """``analysis.<field>`` -> string, for MLflow params (lists comma-joined, "none" if empty)."""
        return {f"analysis.{k}": (",".join(map(str, v)) or "none") if isinstance(v, list) else str(v)
                for k, v in self.to_dict().items()}


def _label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("label") or entry["name"])


def _param(entry: Mapping[str, Any], key: str) -> Any:
    params = entry.get("params") if isinstance(entry.get("params"), Mapping) else entry
    return params.get(key, CLUSTERING_DEFAULTS[key])


def code_default_clustering(methods: Sequence[Mapping[str, Any]]) -> str | None:
    """The first ``clustering`` entry with the pruner's default keep and mode, or None.

    Args:
        methods: pruning method entries as in the YAML or ``Config.to_dict()``
            (``{"name", "label"?, <params>...}``, or ``{"name", "label", "params"}``).
    """
    for m in methods:
        if m["name"] == CLUSTERING and all(_param(m, k) == CLUSTERING_DEFAULTS[k]
                                          for k in ("keep", "mode")):
            return _label(m)
    return None


def balanced_clustering(methods: Sequence[Mapping[str, Any]]) -> str | None:
    """The first ``clustering`` entry with ``mode: balanced``, or None."""
    return next((_label(m) for m in methods
                 if m["name"] == CLUSTERING and _param(m, "mode") == "balanced"), None)


def _check(section: Mapping[str, Any], labels: Sequence[str], embedders: Sequence[str]) -> None:
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise AnalysisError(f"analysis.{unknown[0]}: unknown key (valid: {', '.join(DEFAULTS)})")
    for key in ("metrics", "trend_metrics"):
        vals = list(section.get(key, DEFAULTS[key]))
        if key == "metrics" and not vals:
            raise AnalysisError("analysis.metrics: needs at least one metric")
        if len(set(vals)) != len(vals):
            raise AnalysisError(f"analysis.{key}: duplicate metrics in {vals}")
    for key, lo, hi in (("alpha", 0.0, 1.0), ("power", 0.0, 1.0), ("margin", 0.0, math.inf)):
        v = section.get(key, DEFAULTS[key])
        if not lo < v < hi:
            raise AnalysisError(f"analysis.{key}: must be in ({lo:g}, {hi:g}), got {v}")
    if not 0.0 <= section.get("high_ratio", DEFAULTS["high_ratio"]) < 1.0:
        raise AnalysisError(f"analysis.high_ratio: must be in [0, 1), got {section['high_ratio']}")
    space = section.get("space")
    if space is not None and embedders and space not in embedders:
        raise AnalysisError(f"analysis.space: {space!r} is not one of eval.embedders {list(embedders)}")
    for key in ("contestant", "balanced"):
        v = section.get(key)
        if v is not None and v not in labels:
            raise AnalysisError(f"analysis.{key}: no pruning method labelled {v!r} "
                                f"(labels: {', '.join(labels)})")


def resolve_plan(section: Mapping[str, Any] | None, primary: str, methods: Sequence[Mapping[str, Any]],
                 embedders: Sequence[str] = (), short: str | None = None,
                 circular: Sequence[str] | None = None) -> Plan:
    """Check an ``analysis:`` section and resolve it against the run's spaces and methods.

    Args:
        section: the section's keys (missing ones take :data:`DEFAULTS`; None = all).
        primary: ``eval.primary`` (the space when ``section['space']`` is None).
        methods: pruning method entries (see :func:`code_default_clustering`).
        embedders: ``eval.embedders`` (empty: the space is not checked against them).
        short: the space's metric suffix (None: :data:`SPACE_SHORT`).
        circular: labels selecting in the space (None: clustering entries whose
            ``embedder`` is the space).

    Returns:
        The :class:`Plan`.

    Raises:
        AnalysisError: an unknown key, a value out of range, an unknown label or space.
    """
    section = dict(section or {})
    labels = [_label(m) for m in methods]
    _check(section, labels, embedders)
    s = {**DEFAULTS, **section}
    space = s["space"] or primary
    if short is None:
        if space not in SPACE_SHORT:
            raise AnalysisError(f"analysis.space: no known metric suffix for space {space!r} "
                                f"(known: {', '.join(SPACE_SHORT)})")
        short = SPACE_SHORT[space]
    contestant = s["contestant"] or code_default_clustering(methods)
    clus = [_label(m) for m in methods if m["name"] == CLUSTERING]
    if circular is None:
        circular = [_label(m) for m in methods
                    if m["name"] == CLUSTERING and _param(m, "embedder") == space]
    return Plan(metrics=tuple(metric_column(k, short) for k in s["metrics"]),
                trend_metrics=tuple(metric_column(k, short) for k in s["trend_metrics"]),
                space=space, short=short, baseline=s["baseline"], contestant=contestant,
                exploratory=tuple(c for c in clus if c != contestant),
                balanced=s["balanced"] or balanced_clustering(methods),
                circular=tuple(circular), methods=tuple(labels),
                high_ratio=float(s["high_ratio"]), margin=float(s["margin"]),
                alpha=float(s["alpha"]), power=float(s["power"]))
