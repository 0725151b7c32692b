"""Shared helpers of the throughput benchmarks: machine header, private Ray, child runs.

Every benchmark prints :func:`header` first (date, CPUs, load average), starts Ray
only through :func:`private_ray` (a local instance with its own temp dir that is
always shut down) and writes only under :func:`scratch_dir` (a private /tmp dir).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def header(name: str, argv: dict[str, Any]) -> str:
    """Machine line for the report: date (UTC), CPUs, ``uptime`` load averages, flags."""
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    line = (f"# {name}  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
            f"{os.cpu_count()} CPUs  uptime: {up}\n# flags: {argv}")
    print(line, flush=True)
    return line


def scratch_dir(name: str) -> str:
    """A fresh private directory under /tmp for everything a benchmark writes."""
    return tempfile.mkdtemp(prefix=f"pd_{name}_", dir="/tmp")


@contextlib.contextmanager
def private_ray(tmp: str, **init_kwargs: Any) -> Iterator[Any]:
    """A local Ray instance of this process only (never another process's cluster).

    ``PYTHONPATH`` gets the repo so workers can import ``benchmarks``; Ray Train's
    health-check interval is the pipeline's 0.2 s unless already set.
    """
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-op progress lines
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths are limited
    ray.init(address="local", _temp_dir=temp, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, **init_kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB, Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child_entry(fn: Callable[..., Any], args: tuple, q: Any) -> None:
    base = peak_rss_mib()
    t0 = time.perf_counter()
    try:
        out = fn(*args)
        q.put(("ok", out, time.perf_counter() - t0, base, peak_rss_mib()))
    except BaseException as e:  # reported by the parent
        q.put(("error", f"{type(e).__name__}: {e}", time.perf_counter() - t0, base, peak_rss_mib()))


def run_in_child(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh 'spawn' process; wall time and its own peak RSS.

    Returns ``{"status", "result", "wall_s", "base_rss_mib", "peak_rss_mib"}``: the
    base is the child's peak after importing this module (interpreter + imports of
    the parent's main module), so ``peak - base`` is what ``fn`` added.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_entry, args=(fn, args, q))
    p.start()
    status, out, wall, base, peak = q.get()
    p.join()
    return {"status": status, "result": out, "wall_s": wall, "base_rss_mib": base, "peak_rss_mib": peak}


def growth_exponent(n1: float, t1: float, n2: float, t2: float) -> float:
    """log(t2/t1) / log(n2/n1): 1 = linear, 2 = quadratic (nan if a time is ~0)."""
    import math

    if t1 <= 0 or t2 <= 0:
        return float("nan")
    return math.log(t2 / t1) / math.log(n2 / n1)
