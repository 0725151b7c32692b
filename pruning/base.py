"""Shared pruning contract: score containers, parameter validation and `select`.

Every method is a `Pruner` subclass in its own file, registered in
`pruning.PRUNERS` under its exact YAML name. A pruner scores a dataset once per
(dataset, method, seed) and selects a subset for each pruning ratio from those
scores. `ratio` is the fraction REMOVED; exactly `round(N * (1 - ratio))`
samples are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from pruning.kmeans import kmeans

KEEP_HIGH_LOW = ("high", "low")


@dataclass
class ScoreContext:
    """Everything a pruner may read.

    Attributes:
        n: dataset size N.
        seed: seed of this scoring run (methods derive their own Generators).
        labels: (N,) int64 class labels, -1 = unlabelled, or None.
        embeddings: embedder name -> (N, D) float32 raw features.
        stats: proxy statistics, e.g. "loss_traj" (N, T), "grad_norm" (N, G),
            "moso" (N, G), all float64.
    """

    n: int
    seed: int
    labels: np.ndarray | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ScoreResult:
    """Scores of one method on one dataset.

    Attributes:
        scores: (N,) float64, higher = keep (the method's keep direction applied).
        groups: (N,) int64 group ids (cluster or stratum) for methods whose
            `Pruner.select` allocates per-group quotas, else None.
        meta: JSON-able extras (inertia, k, number of duplicates, ...).
    """

    scores: np.ndarray
    groups: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    """Declaration of one pruner parameter.

    Attributes:
        default: value used when the YAML omits the parameter.
        types: accepted Python types (bool is never accepted as int).
        choices: allowed values, or None for any value of `types`.
        check: predicate on the value; False -> ValueError with `rule` as message.
        rule: human-readable statement of the constraint, for error messages.
    """

    default: Any
    types: tuple[type, ...]
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    rule: str = ""


def keep_count(n: int, ratio: float) -> int:
    """Number of samples kept at pruning `ratio`: round(n * (1 - ratio)).

    Args:
        n: dataset size.
        ratio: fraction removed, in [0, 1].

    Returns:
        Integer in [0, n].
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    # Round a hair away from binary noise (100 * (1 - 0.9) = 9.999...) first.
    return int(min(n, max(0, round(round(n * (1.0 - float(ratio)), 9)))))


def select(scores: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Keep the highest-scoring `round(N * (1 - ratio))` samples.

    Args:
        scores: (N,) scores, higher = keep. NaN is rejected.
        ratio: fraction REMOVED, in [0, 1].
        rng: breaks ties among equal scores (a random permutation is the
            secondary sort key), so equal scores never favour low indices.

    Returns:
        (M,) sorted unique int64 indices, M = round(N * (1 - ratio)).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n = scores.shape[0]
    m = keep_count(n, ratio)
    tiebreak = rng.permutation(n)
    # lexsort sorts by the last key first: descending score, then random order.
    order = np.lexsort((tiebreak, -scores))
    return np.sort(order[:m]).astype(np.int64)


class Pruner:
    """Base class of every pruning method.

    Subclasses declare `name`, `needs_stats`, `PARAMS` and implement `score`.
    Validated parameters are stored in `self.params`; `self.embedder` names the
    embedder whose features the method needs (or None). Read `needs_stats` and
    `embedder` from the instance: some methods (ccs) depend on their params.
    """

    name: ClassVar[str] = ""
    needs_stats: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise TypeError(
                f"pruner '{self.name}': unknown parameter(s) {unknown}; "
                f"allowed: {sorted(self.PARAMS)}"
            )
        merged = {k: params.get(k, spec.default) for k, spec in self.PARAMS.items()}
        for key, spec in self.PARAMS.items():
            _validate(self.name, key, merged[key], spec)
        self.params: dict[str, Any] = merged
        self.embedder: str | None = merged.get("embedder")

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Score every sample; higher = keep. Implemented by each method."""
        raise NotImplementedError

    def select(self, result: ScoreResult, ratio: float, rng: np.random.Generator) -> np.ndarray:
        """Indices to keep at `ratio` (default: global top scores, `select`)."""
        return select(result.scores, ratio, rng)

    def _stat(self, ctx: ScoreContext, key: str) -> np.ndarray:
        """ctx.stats[key] as float64 with rows == N, or a clear error."""
        if key not in ctx.stats:
            raise ValueError(f"pruner '{self.name}' needs proxy statistic '{key}'")
        arr = np.asarray(ctx.stats[key], dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape[0] != ctx.n:
            raise ValueError(f"stats['{key}'] has {arr.shape[0]} rows, expected N={ctx.n}")
        return arr

    def _features(self, ctx: ScoreContext) -> np.ndarray:
        """L2-normalized (N, D) float32 features of `self.embedder`."""
        if self.embedder not in ctx.embeddings:
            raise ValueError(f"pruner '{self.name}' needs embeddings '{self.embedder}'")
        x = np.asarray(ctx.embeddings[self.embedder], dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != ctx.n:
            raise ValueError(f"embeddings['{self.embedder}'] must be (N={ctx.n}, D), got {x.shape}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)

    def _orient(self, raw: np.ndarray) -> np.ndarray:
        """Apply the `keep: high|low` parameter to raw scores (float64 copy)."""
        raw = np.asarray(raw, dtype=np.float64)
        return raw.copy() if self.params.get("keep", "high") == "high" else -raw


def _validate(pruner: str, key: str, value: Any, spec: Param) -> None:
    """Raise TypeError/ValueError naming `key` if `value` breaks `spec`."""
    ok_type = isinstance(value, spec.types) and not (
        isinstance(value, bool) and bool not in spec.types
    )
    if not ok_type:
        names = "|".join(t.__name__ for t in spec.types)
        raise TypeError(
            f"pruner '{pruner}': parameter '{key}' must be {names}, got {value!r}"
        )
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(
            f"pruner '{pruner}': parameter '{key}' must be one of {list(spec.choices)}, "
            f"got {value!r}"
        )
    if spec.check is not None and not spec.check(value):
        raise ValueError(f"pruner '{pruner}': parameter '{key}' {spec.rule}, got {value!r}")


def stat_column(width: int, index: int, key: str, pruner: str) -> int:
    """Resolve a python-style column index of a proxy statistic into [0, width).

    Args:
        width: number of columns (checkpoints) of the statistic.
        index: the pruner's parameter value; negative counts from the end.
        key: the parameter's name, for the error message.
        pruner: the pruner's name, for the error message.

    Returns:
        ``index % width``; ValueError naming the parameter when out of range.
    """
    if not -width <= index < width:
        raise ValueError(
            f"pruner '{pruner}': parameter '{key}'={index} is out of range for {width} columns"
        )
    return index % width


def keep_param(default: str = "high") -> Param:
    """The shared `keep: high|low` parameter (the paper's --inverse flag)."""
    return Param(default, (str,), choices=KEEP_HIGH_LOW)


def select_in_groups(
    scores: np.ndarray, groups: np.ndarray, quotas: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Keep the `quotas[g]` highest-scoring members of every group g.

    Args:
        scores: (N,) higher = keep.
        groups: (N,) int64 group ids in [0, G).
        quotas: (G,) int number kept per group, each <= the group's size.
        rng: breaks ties among equal scores.

    Returns:
        (sum(quotas),) sorted unique int64 indices.
    """
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    quotas = np.asarray(quotas, dtype=np.int64)
    sizes = np.bincount(groups, minlength=len(quotas))
    if len(sizes) != len(quotas) or (quotas > sizes).any() or (quotas < 0).any():
        raise ValueError("quotas must be in [0, group size] for every group")
    # One global sort by (group, -score, random) then the first quota[g] per group.
    order = np.lexsort((rng.permutation(len(scores)), -scores, groups))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(order)) - starts[groups[order]]
    keep = order[rank < quotas[groups[order]]]
    return np.sort(keep).astype(np.int64)


def kmeans_params(**own: Param) -> dict[str, Param]:
    """``PARAMS`` of a k-means method: ``embedder``, ``k``, the method's ``own`` params, ``niter``.

    Args:
        own: the method's other parameters, in the order they are documented.

    Returns:
        A fresh dict (``embedder`` effnet_lite0, ``k`` 100 > 0, ``niter`` 25 >= 0).
    """
    return {
        "embedder": Param("effnet_lite0", (str,)),
        "k": Param(100, (int,), check=lambda v: v > 0, rule="must be > 0"),
        **own,
        "niter": Param(25, (int,), check=lambda v: v >= 0, rule="must be >= 0"),
    }


@dataclass
class Clusters:
    """k-means of a pruner's normalized features (see `KMeansPruner.cluster`).

    Attributes:
        x: (N, D) L2-normalized float32 features.
        k: clusters used, min(params k, N).
        centroids: (k, D) float32.
        assign: (N,) int64 cluster of each sample.
        dist: (N,) float32 squared L2 distance to its centroid.
    """

    x: np.ndarray
    k: int
    centroids: np.ndarray
    assign: np.ndarray
    dist: np.ndarray


class KMeansPruner(Pruner):
    """Base of the methods that cluster an embedder's features (`kmeans_params`)."""

    def cluster(self, ctx: ScoreContext) -> Clusters:
        """k-means (seed ``ctx.seed``) with ``min(k, N)`` clusters of the normalized features."""
        x = self._features(ctx)
        k = min(self.params["k"], ctx.n)
        centroids, assign, dist = kmeans(x, k, seed=ctx.seed, niter=self.params["niter"])
        return Clusters(x, k, centroids, assign, dist)
