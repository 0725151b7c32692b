"""Data pruning methods for generative diffusion models.

`PRUNERS` maps the exact YAML method names to `Pruner` classes;
`PRUNERS[name](**params)` raises TypeError/ValueError naming a bad param.
"""

from pruning.base import Pruner, ScoreContext, ScoreResult, keep_count, select
from pruning.ccs import CCSPruner
from pruning.clustering import ClusteringPruner
from pruning.el2n import EL2NPruner
from pruning.grand import GraNdPruner
from pruning.monotonicity import MonotonicityPruner
from pruning.moso import MoSoPruner
from pruning.prototypes import PrototypesPruner
from pruning.random import RandomPruner
from pruning.semdedup import SemDeDupPruner

PRUNERS: dict[str, type[Pruner]] = {
    "random": RandomPruner,
    "monotonicity": MonotonicityPruner,
    "el2n": EL2NPruner,
    "grand": GraNdPruner,
    "moso": MoSoPruner,
    "clustering": ClusteringPruner,
    "prototypes": PrototypesPruner,
    "semdedup": SemDeDupPruner,
    "ccs": CCSPruner,
}

__all__ = ["PRUNERS", "Pruner", "ScoreContext", "ScoreResult", "keep_count", "select"]
