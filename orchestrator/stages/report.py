"""Report stage: comparison table, verdicts, the pre-registered analysis and plots.

The tables and plots are built here (:func:`build_report`) and nothing is logged: MLflow
(the parent and trial runs, the runs view) is :mod:`orchestrator.tracking`'s, which takes
the :class:`~orchestrator.tracking.runs.SweepReport` this stage returns
(:func:`orchestrator.tracking.log_report`).

The stage reads :class:`~orchestrator.training.records.TrialResult` records (written by
:mod:`orchestrator.training.trial`); their ``files`` are cache keys, copied to local
paths on demand (``SweepReport.trial_files``) for the trials MLflow lacks.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from eval.analysis import AnalysisError, analyse, labeller_table, page_markdown, resolve_plan
from eval.analysis.render import NOTES
from eval.analysis.trials_table import trials_frame
from eval.analysis.welch_tables import ClaimsError, render
from orchestrator.config.checks import circular_selections, circularity_warnings
from orchestrator.config.loader import dump_yaml
from orchestrator.config.schema import Config, as_mapping
from orchestrator.stages.sweep import fetch_files, load_results
from orchestrator.storage import fsutil
from orchestrator.tracking.runs import SweepReport
from orchestrator.training.evaluate import metric_name, space_short
from orchestrator.training.records import TrialResult, TrialSpec

FULL = "full"
KEY_COLS = ["dataset", "method", "ratio"]
# Column order of the printed table; anything else follows alphabetically.
METRIC_ORDER = ["fid", "fd_", "f_score", "precision", "recall", "density", "coverage",
                "vendi", "mem_nn_mean", "mem_nn_median", "mem_subset_copy_rate", "cov_kl_uniform",
                "cov_kl_train"]
HIDDEN_IN_MARKDOWN = ("cov_share_", "cov_pred_share_", "subset_share_")
# The figures' panels by default: the headline metric of each family (quality, fidelity
# and diversity, diversity, memorization) in every evaluation space; the tables keep all.
# 27 panels per figure were unreadable and cost ~18 s of plotting per run (2026-12-06).
PLOTTED_METRICS = ("fid", "fd_", "f_score", "vendi", "mem_nn_mean")


def _metric_rank(name: str) -> tuple[int, str]:
    """Display rank: by the metric (``precision_cls`` ranks as ``precision``), then name."""
    for i, prefix in enumerate(METRIC_ORDER):
        if name == prefix or name.startswith(prefix if prefix.endswith("_") else prefix + "_"):
            return i, name
    return len(METRIC_ORDER), name


def comparison_table(results: Sequence[TrialResult], method_order: Sequence[str] = ()) -> pd.DataFrame:
    """Rows dataset/method/ratio; per metric ``<m>_mean``, ``<m>_std`` over seeds, ``n_seeds``.

    The full-data baseline comes first within each dataset, then methods in
    ``method_order`` (config order), ratios ascending.
    """
    rows = [r.row() for r in results]
    if not rows:
        return pd.DataFrame(columns=KEY_COLS + ["n_seeds"])
    df = pd.DataFrame(rows)
    metrics = sorted((c for c in df.columns if c not in KEY_COLS + ["seed"]), key=_metric_rank)
    grouped = df.groupby(KEY_COLS, sort=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n_seeds"] = grouped["seed"].nunique()
    out = out.reset_index()
    order = {m: i for i, m in enumerate([FULL, *method_order])}
    datasets = {d: i for i, d in enumerate(dict.fromkeys(df["dataset"]))}
    out["_d"] = out["dataset"].map(datasets)
    out["_m"] = out["method"].map(lambda m: order.get(m, len(order)))
    out = out.sort_values(["_d", "_m", "method", "ratio"]).drop(columns=["_d", "_m"])
    return out.reset_index(drop=True)


def table_metrics(table: pd.DataFrame) -> list[str]:
    """Metric names present in a comparison table, in display order."""
    return [c[:-5] for c in table.columns if c.endswith("_mean")]


def _fmt(mean: float, std: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "nan" if mean is not None else ""
    digits = 4 if abs(mean) < 10 else 2
    text = f"{mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def to_markdown(table: pd.DataFrame, hide: Iterable[str] = HIDDEN_IN_MARKDOWN) -> str:
    """GitHub Markdown: ``mean ± std`` cells (std omitted with one seed)."""
    hide = tuple(hide)
    metrics = [m for m in table_metrics(table) if not m.startswith(hide)]
    head = KEY_COLS + metrics + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in table.iterrows():
        cells = [str(row["dataset"]), str(row["method"]), f"{row['ratio']:.2f}"]
        cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
        cells.append(str(int(row["n_seeds"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def reference_header(specs: Sequence[TrialSpec]) -> str:
    """The report's header: each dataset's held-out reference (origin and size), from the
    trials' ``reference_origin`` / ``reference_size`` params."""
    refs: dict[str, tuple[Any, Any]] = {}
    for spec in specs:
        refs.setdefault(spec.trial.dataset, (spec.params.get("reference_origin"),
                                             spec.params.get("reference_size")))
    if not refs:
        return ""
    lines = ["Metrics compare the generated samples with a held-out reference that no "
             "training, proxy, scoring or selection saw:", ""]
    lines += [f"- reference of {ds}: {origin}, {size} images" for ds, (origin, size) in refs.items()]
    return "\n".join(lines) + "\n\n"


def write_table(table: pd.DataFrame, out_dir: str | os.PathLike,
                header: str = "") -> dict[str, str]:
    """Write ``results.csv`` and ``results.md`` (``header`` above the table); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / "results.csv", out / "results.md"
    table.to_csv(csv, index=False)
    md.write_text(header + to_markdown(table))
    return {"csv": str(csv), "markdown": str(md)}


def write_trials(results: Sequence[dict], out_dir: str | os.PathLike) -> str:
    """Write ``trials.csv``: one row per trial (format: :mod:`eval.analysis.trials_table`),
    the input of ``python -m eval.analysis.report`` and ``python -m orchestrator.compare``;
    return its path."""
    path = Path(out_dir) / "trials.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    trials_frame(results).to_csv(path, index=False)
    return str(path)


def _plot_metrics() -> Any:
    # The Agg backend must be chosen before pyplot is imported; only the plots need it.
    # lazy: matplotlib costs ~1.4 s to import (measured 2026-12-06)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use (above)

    return plt


def _panels(plt: Any, n: int) -> tuple[Any, Any]:
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def plotted_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics the figures show by default (:data:`PLOTTED_METRICS` in every space),
    in display order; every metric when the table has none of them."""
    shown = [m for m in table_metrics(table) if not m.startswith(HIDDEN_IN_MARKDOWN)]
    headline = [m for m in shown if _metric_rank(m)[0] < len(METRIC_ORDER)
                and METRIC_ORDER[_metric_rank(m)[0]] in PLOTTED_METRICS]
    return headline or shown


def _shown_metrics(table: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return plotted_metrics(table)
    return [m for m in metrics if not m.startswith(HIDDEN_IN_MARKDOWN)]


def _with_full(table: pd.DataFrame, ds: str, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of (ds, method) with the full-data baseline prepended as ratio 0."""
    sub = table[(table["dataset"] == ds) & (table["method"] == method)]
    base = table[(table["dataset"] == ds) & (table["method"] == FULL)]
    return (pd.concat([base, sub]) if len(base) else sub), base


def _save(plt: Any, fig: Any, axes: Any, title: str, path: Path) -> str:
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def plot_metric_vs_ratio(table: pd.DataFrame, out_dir: str | os.PathLike,
                         metrics: Sequence[str] | None = None) -> list[str]:
    """One PNG per pruning method (``ratio_<method>.png``): a panel per metric (default:
    :func:`plotted_metrics`), mean ± std against ratio; a line per dataset, its full-data
    baseline dashed (and at ratio 0)."""
    plt, out = _plot_metrics(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = _shown_metrics(table, metrics)
    paths = []
    for method in [m for m in dict.fromkeys(table["method"]) if m != FULL]:
        fig, axes = _panels(plt, len(metrics))
        for ax, metric in zip(axes.flat, metrics):
            for i, ds in enumerate(dict.fromkeys(table["dataset"])):
                sub, base = _with_full(table, ds, method)
                ax.errorbar(sub["ratio"], sub[f"{metric}_mean"], yerr=sub[f"{metric}_std"].fillna(0),
                            marker="o", color=f"C{i}", label=ds, capsize=3)
                if len(base):
                    ax.axhline(float(base[f"{metric}_mean"].iloc[0]), ls="--", color=f"C{i}", lw=1,
                               label=f"{ds} full")
            ax.set_title(metric)
            ax.set_xlabel("pruning ratio")
        paths.append(_save(plt, fig, axes, f"{method}: metric vs pruning ratio",
                           out / f"ratio_{method}.png"))
    return paths


def plot_methods_vs_ratio(table: pd.DataFrame, out_dir: str | os.PathLike,
                          metrics: Sequence[str] | None = None) -> list[str]:
    """The paper's figure: one PNG per dataset (``methods_<dataset>.png``), a panel per
    metric (default: :func:`plotted_metrics`), a line per method (mean ± std against
    ratio), the full data dashed."""
    plt, out = _plot_metrics(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = _shown_metrics(table, metrics)
    methods = [m for m in dict.fromkeys(table["method"]) if m != FULL]
    paths = []
    for ds in dict.fromkeys(table["dataset"]):
        fig, axes = _panels(plt, len(metrics))
        for ax, metric in zip(axes.flat, metrics):
            for i, method in enumerate(methods):
                sub, _ = _with_full(table, ds, method)
                ax.errorbar(sub["ratio"], sub[f"{metric}_mean"], yerr=sub[f"{metric}_std"].fillna(0),
                            marker="o", ms=3, color=f"C{i}", label=method, capsize=2, lw=1)
            base = table[(table["dataset"] == ds) & (table["method"] == FULL)]
            if len(base):
                ax.axhline(float(base[f"{metric}_mean"].iloc[0]), ls="--", color="k", lw=1,
                           label="full data")
            ax.set_title(metric)
            ax.set_xlabel("pruning ratio")
        paths.append(_save(plt, fig, axes, f"{ds}: metric vs pruning ratio, all methods",
                           out / f"methods_{ds}.png"))
    return paths


def plot_loss_curve(curve: Sequence[Sequence[float]], path: str, title: str) -> str:
    """Training loss against step as a PNG."""
    plt = _plot_metrics()

    arr = np.asarray(curve, dtype=float).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(arr[:, 0], arr[:, 1])
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def space_header(cfg: Config, specs: Sequence[TrialSpec]) -> str:
    """Markdown lines naming the evaluation spaces, the primary one, the classifier's test
    accuracy per dataset and the methods that select in an evaluation space."""
    ev = cfg.eval
    lines = [f"Evaluation spaces: {', '.join(ev.embedders)}; primary (verdicts): {ev.primary}."]
    accs = {}
    for spec in specs:
        if "classifier_test_accuracy" in spec.params:
            accs[spec.trial.dataset] = (spec.params["classifier_test_accuracy"],
                                        spec.params.get("classifier_test_images"))
    for ds, (acc, n) in accs.items():
        lines.append(f"Classifier space ({ds}): test accuracy {float(acc):.4f} on {n} held-out "
                     "labelled training images.")
    lines += [w[0].upper() + w[1:] + "." for w in circularity_warnings(cfg)]
    return "\n".join(f"- {line}" for line in lines) + "\n"


def verdicts_markdown(cfg: Config, trials: pd.DataFrame) -> str:
    """The paper's claims (a), (b) and, with ``cluster_coverage``, (c) on the primary space,
    as the Welch tables of :mod:`eval.analysis.welch_tables` (``verdicts.md``).

    (a)/(b) test ``fd_<primary short>`` (``fid`` for Inception; lower is better), (c)
    ``cov_kl_uniform_<primary short>``; methods selecting in the primary space are marked.
    A claim the data cannot answer (no baseline, no column) gives its one-line reason.
    """
    short = space_short(cfg.eval.primary)
    circular = {label for label, space in circular_selections(cfg) if space == cfg.eval.primary}
    metric = metric_name("fd", short)
    parts = []
    try:
        parts.append(render(trials, metric, claims=("a", "b"), circular=circular))
    except ClaimsError as e:
        parts.append(f"Claims (a), (b): not computed: {e}\n")
    if "cluster_coverage" in cfg.eval.metrics:
        try:
            parts.append(render(skewed=trials, claims=("c",), skewed_circular=circular,
                                balance_metric=metric_name("cov_kl_uniform", short)))
        except ClaimsError as e:
            parts.append(f"Claim (c): not computed: {e}\n")
    return "\n".join(parts)


def analysis_section(cfg: Config, trials: pd.DataFrame) -> tuple[str, Any]:
    """The pre-registered analysis (``cfg.analysis``, :mod:`eval.analysis`) of the trials.

    Returns:
        (Markdown, the resolved :class:`eval.analysis.Plan`, logged as ``analysis.*``
        params and the ``analysis_plan.json`` artifact); a plan that cannot be resolved
        gives a one-line Markdown reason and None.
    """
    space = cfg.analysis.space or cfg.eval.primary
    try:
        plan = resolve_plan(as_mapping(cfg.analysis), cfg.eval.primary,
                            cfg.to_dict()["pruning"]["methods"], cfg.eval.embedders,
                            short=space_short(space),
                            circular=[m for m, s in circular_selections(cfg) if s == space])
    except AnalysisError as e:
        return f"Not computed: {e}\n", None
    tables = {ds: labeller_table(trials[trials["dataset"] == ds], plan)
              for ds in dict.fromkeys(trials["dataset"])}
    page = page_markdown(analyse(trials, plan), plan, tables, title="Pre-registered analysis")
    return page + "\n" + NOTES + "\n", plan


def build_report(cache: Any, cfg: Config, specs: list[TrialSpec], reliability: str = ""
                 ) -> tuple[str, SweepReport]:
    """Table (CSV + Markdown), per-seed trials, verdicts, the pre-registered analysis and
    plots, written to a temporary folder and copied to ``<output_dir>/report/``.

    ``reliability``: Markdown of the statistic methods' score reliability, appended to
    ``analysis.md``. Returns the Markdown page and the :class:`SweepReport` that
    :func:`orchestrator.tracking.log_report` logs to MLflow (the report logs nothing).
    """
    results = load_results(cache, specs)
    out_dir = os.path.join(tempfile.mkdtemp(prefix="prunediff-report-"))
    table = comparison_table(results, [m.label for m in cfg.pruning.methods])
    header = reference_header(specs) + space_header(cfg, specs)
    paths = write_table(table, out_dir, header=header)
    paths["trials"] = write_trials([r.to_json() for r in results], out_dir)  # per-seed values
    trials = trials_frame([r.to_json() for r in results])
    verdicts = verdicts_markdown(cfg, trials) if results else ""
    analysis, plan = analysis_section(cfg, trials) if results else ("", None)
    analysis += reliability   # the scores' reliability (stages/score.py: score_reliability)
    paths["verdicts"] = os.path.join(out_dir, "verdicts.md")
    Path(paths["verdicts"]).write_text(verdicts)
    paths["analysis"] = os.path.join(out_dir, "analysis.md")
    Path(paths["analysis"]).write_text(analysis)
    paths["analysis_plan"] = os.path.join(out_dir, "analysis_plan.json")
    Path(paths["analysis_plan"]).write_text(json.dumps(plan.to_dict() if plan else {}, indent=1))
    markdown = (header + "\n" + to_markdown(table)
                + ("\n## Verdicts\n\n" + verdicts if verdicts else "")
                + ("\n" + analysis if analysis else ""))
    Path(paths["markdown"]).write_text(markdown)
    plots = (plot_methods_vs_ratio(table, out_dir) + plot_metric_vs_ratio(table, out_dir)
             if len(table) else [])
    cfg_path = os.path.join(out_dir, "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(dump_yaml(cfg))
    params = {"config_hash": cfg.config_hash(), "n_trials": len(specs),
              "datasets": ",".join(d.name for d in cfg.data.datasets),
              "methods": ",".join(m.label for m in cfg.pruning.methods),
              "ratios": ",".join(str(r) for r in cfg.pruning.ratios),
              "seeds": ",".join(str(s) for s in cfg.experiment.seeds),
              "eval_spaces": ",".join(cfg.eval.embedders), "eval_primary": cfg.eval.primary,
              **(plan.params() if plan else {})}
    files = [paths["csv"], paths["trials"], paths["markdown"], paths["verdicts"],
             paths["analysis"], paths["analysis_plan"]]
    _copy_outputs(cfg, [*files, *plots])

    def trial_files(res: TrialResult) -> dict[str, str]:
        tdir = os.path.join(out_dir, res.trial.name)
        found = fetch_files(cache, res, tdir)
        if res.loss_curve:
            found["loss_curve"] = plot_loss_curve(res.loss_curve,
                                                  os.path.join(tdir, "loss_curve.png"),
                                                  res.trial.name)
        return found

    view = [m for m in table_metrics(table) if not m.startswith(HIDDEN_IN_MARKDOWN)]
    return markdown, SweepReport(results, trial_files, params, [*files, cfg_path, *plots], view)


def _copy_outputs(cfg: Config, files: list[str]) -> None:
    """Table and plots also land in <output_dir>/report/ (local dir or bucket)."""
    fs, base = fsutil.filesystem(fsutil.join(cfg.experiment.output_dir, "report"))
    fs.create_dir(base, recursive=True)
    for path in files:
        with open(path, "rb") as src, fs.open_output_stream(f"{base}/{os.path.basename(path)}") as dst:
            dst.write(src.read())
