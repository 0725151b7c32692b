"""Resource requests derived from the cluster, so nothing asks for more than exists.

On a 2-CPU machine a Train worker or a Ray Data actor that asks for a whole CPU
beside anything else waits forever (measured, see DESIGN.md), so every request here
is a fraction computed from ``ray.cluster_resources()`` / ``ray.nodes()``.
:func:`plan_resources` is a pure function of the config section and the cluster's
numbers (unit-testable without Ray, and this module imports none: the local executor
plans with it); ``runtime.cluster.current_plan`` reads the live cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# A Tune trial only builds a TorchTrainer and waits on it: a sliver of a CPU.
TRIAL_CPUS = 0.05
# Share of the cluster's CPUs handed out; the rest keeps Ray's own tasks moving.
USABLE_SHARE = 0.95


@dataclass(frozen=True)
class ResourcePlan:
    """Per-actor requests for every stage.

    Attributes:
        total_cpus / total_gpus: the cluster's logical resources when planned.
        num_workers: DDP workers per training run (VQ-VAE, proxy, each trial).
        worker_cpus / worker_gpus: request of one Train worker.
        trial_cpus: request of the Tune trial function itself.
        max_concurrent_trials: Tune's limit; None lets an autoscaler grow the cluster.
        actor_pool_size / actor_cpus / actor_gpus: Ray Data map_batches actor pool.
        torch_threads: intra-op threads of a trial's worker (trials run side by side).
        solo_threads: threads of a worker of a run that has the cluster to itself
            (VQ-VAE, proxy); actor_threads: threads of one Ray Data actor.
    """

    total_cpus: float
    total_gpus: float
    num_workers: int
    worker_cpus: float
    worker_gpus: float
    trial_cpus: float
    max_concurrent_trials: int | None
    actor_pool_size: int
    actor_cpus: float
    actor_gpus: float
    torch_threads: int
    solo_threads: int = 1
    actor_threads: int = 1

    def spare_cpus(self) -> float:
        """CPUs left beside one training run's workers (Ray Data tasks need 1 each)."""
        return self.total_cpus - self.num_workers * self.worker_cpus

    def worker_resources(self) -> dict[str, float]:
        """``ScalingConfig.resources_per_worker``."""
        res = {"CPU": self.worker_cpus}
        if self.worker_gpus:
            res["GPU"] = self.worker_gpus
        return res


def _floor2(x: float) -> float:
    return math.floor(x * 100 + 1e-6) / 100


def _cpus_per_gpu(nodes: Sequence[Mapping[str, Any]]) -> float | None:
    """Smallest CPU/GPU ratio over alive GPU nodes, or None without GPU nodes."""
    ratios = [n["CPU"] / n["GPU"] for n in nodes if n.get("GPU", 0) > 0 and n.get("CPU", 0) > 0]
    return min(ratios) if ratios else None


def plan_resources(res_cfg: Any, cluster: Mapping[str, float],
                   nodes: Sequence[Mapping[str, Any]] = ()) -> ResourcePlan:
    """Fractional requests for a config's ``resources`` section on a given cluster.

    Args:
        res_cfg: ``orchestrator.config.ResourcesConfig``.
        cluster: ``ray.cluster_resources()`` (keys ``CPU``, ``GPU``).
        nodes: per-node resource dicts of alive nodes (GPU clusters only).

    Returns:
        The plan. CPU-only: trials run ``floor(cpus / num_workers)`` at a time, each
        worker asking an equal share of 95% of the CPUs (0.9 on 2 CPUs). GPU: one GPU
        per worker and the GPU nodes' CPUs per GPU (at most 8).
    """
    cpus = float(cluster.get("CPU", 0.0))
    gpus = float(cluster.get("GPU", 0.0))
    nw = int(res_cfg.num_workers)
    # An autoscaling cluster whose head offers no CPU reports none until the autoscaler
    # adds workers: the workers' request must then come from the config, and
    # concurrency is left to the autoscaler (GPU requests are fixed already).
    autoscaling = cpus <= 0
    if autoscaling and not res_cfg.use_gpu and res_cfg.cpus_per_worker == "auto":
        raise ValueError("the Ray cluster reports no CPUs (a CPU-less head of an autoscaling "
                         "cluster?): set resources.cpus_per_worker to what one worker may ask")
    usable = cpus * USABLE_SHARE
    if res_cfg.use_gpu:
        worker_gpus = 1.0
        per_gpu = _cpus_per_gpu(nodes)
        auto_cpus = max(1.0, min(8.0, math.floor(per_gpu))) if per_gpu else 4.0
        conc_auto = int(gpus // nw) if gpus >= nw else None  # None: let the autoscaler add GPUs
    else:
        worker_gpus = 0.0
        conc_auto = max(1, int(cpus // nw))
        # Small machines: split 95% of the CPUs evenly; big ones: one CPU per worker.
        auto_cpus = 1.0 if cpus >= 8 else _floor2((usable - conc_auto * TRIAL_CPUS) / (conc_auto * nw))
    worker_cpus = auto_cpus if res_cfg.cpus_per_worker == "auto" else float(res_cfg.cpus_per_worker)
    if worker_cpus <= 0:
        raise ValueError(f"resources.cpus_per_worker: {worker_cpus} leaves no CPU per worker")
    if res_cfg.max_concurrent_trials == "auto":
        if res_cfg.use_gpu or autoscaling:
            max_conc = None if autoscaling else conc_auto
        else:
            max_conc = max(1, int((usable + 1e-9) // (nw * worker_cpus + TRIAL_CPUS)))
    else:
        max_conc = int(res_cfg.max_concurrent_trials)
    pool = int(res_cfg.actor_pool_size)
    actor_gpus = float(res_cfg.gpus_per_actor)
    # Leave about half the CPUs to Ray Data's read and collate tasks.
    actor_cpus = min(1.0, _floor2(max(0.05, 0.45 * cpus / pool)))
    if actor_gpus > 0 and gpus > 0:
        actor_cpus = min(actor_cpus, 1.0)
    threads = max(1, int(round(worker_cpus)))
    # Stages that run alone may use the CPUs they do not formally request.
    solo = max(threads, min(8, int(cpus // nw))) if not res_cfg.use_gpu else threads
    actor_threads = max(1, min(8, int(cpus // pool)))
    return ResourcePlan(cpus, gpus, nw, worker_cpus, worker_gpus, TRIAL_CPUS, max_conc,
                        pool, actor_cpus, actor_gpus, threads, solo, actor_threads)


def describe(plan: ResourcePlan) -> str:
    """One line for the log: what each actor asks for."""
    conc = "autoscaler" if plan.max_concurrent_trials is None else plan.max_concurrent_trials
    return (f"cluster {plan.total_cpus:g} CPU / {plan.total_gpus:g} GPU: {plan.num_workers} worker(s) "
            f"x {plan.worker_cpus:g} CPU{f' + {plan.worker_gpus:g} GPU' if plan.worker_gpus else ''} "
            f"per trial, {conc} trial(s) at once; data actors {plan.actor_pool_size} x "
            f"{plan.actor_cpus:g} CPU{f' + {plan.actor_gpus:g} GPU' if plan.actor_gpus else ''}")
