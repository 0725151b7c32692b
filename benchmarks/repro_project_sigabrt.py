"""Minimal reproduction attempt: a Ray Data ``Project`` (``select_columns``) worker's SIGABRT.

A quickstart log (issue 13) held three Ray-internal ``SIGABRT`` traces ("Mutex corrupt:
both reader and writer lock held", an absl::Mutex check) from the worker that ran a
``Project`` operator, in a run that succeeded. The pipeline's pattern was: an in-memory
Arrow dataset (``orchestrator.data.base``: tensor columns), ``select_columns`` feeding
a Train run (encode) and an actor-pool ``map_batches`` (embed), then ``ray.shutdown()``.

This script runs that pattern ``--rounds`` times on a private local Ray and greps every
log file of the session for the abort, with and without the projection:

    .venv/bin/python -m benchmarks.repro_project_sigabrt [--rounds 5] [--no-project]

It prints how many Ray log files contain "Mutex corrupt" / "SIGABRT".
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np


class Embed:
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"], "features": batch["image"].reshape(len(batch["id"]), -1)[:, :8]
                .astype(np.float32)}


def one_round(project: bool, n: int) -> None:
    import pyarrow as pa
    import ray
    from ray.data import ActorPoolStrategy
    from ray.data.extensions import ArrowTensorArray

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    tables = [pa.table({"id": np.arange(i, min(i + 500, n), dtype=np.int64),
                        "image": ArrowTensorArray.from_numpy(images[i:i + 500]),
                        "label": np.zeros(min(500, n - i), dtype=np.int64)}) for i in range(0, n, 500)]
    ds = ray.data.from_arrow(tables)
    src = ds.select_columns(["id", "image"]) if project else ds
    out = src.map_batches(Embed, batch_size=200, compute=ActorPoolStrategy(size=1), batch_format="numpy")
    got = sum(len(b["id"]) for b in out.iter_batches(batch_size=4096, batch_format="numpy"))
    assert got == n, got
    mat = (ds.select_columns(["image"]) if project else ds).materialize()
    assert mat.count() == n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--no-project", action="store_true")
    a = p.parse_args()
    import ray

    tmp = tempfile.mkdtemp(prefix="pdrepro-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    t0 = time.time()
    for r in range(a.rounds):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
        one_round(not a.no_project, a.n)
        ray.shutdown()
        print(f"round {r + 1}/{a.rounds} done ({time.time() - t0:.0f}s)", flush=True)
    hits = {}
    for path in glob.glob(f"{tmp}/ray/session_*/logs/*"):
        try:
            text = open(path, errors="replace").read()
        except OSError:
            continue
        for needle in ("Mutex corrupt", "SIGABRT"):
            if needle in text:
                hits.setdefault(needle, []).append(os.path.basename(path))
    print(f"ray {ray.__version__}; project={not a.no_project}; rounds={a.rounds}; "
          f"load {os.getloadavg()}; logs under {tmp}")
    for needle in ("Mutex corrupt", "SIGABRT"):
        print(f"{needle}: {len(hits.get(needle, []))} log file(s) {hits.get(needle, [])[:5]}")


if __name__ == "__main__":
    main()
