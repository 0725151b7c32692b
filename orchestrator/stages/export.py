"""Export stage: the selected subsets as files a user can train on, and in MLflow.

Runs right after ``select`` (``--until select`` and full runs alike) and writes, under
``<output_dir>/subsets/`` (a local folder, ``s3://`` or ``gs://``)::

    index.csv                                   dataset, method, ratio, seed, n_total, n_kept, file
    <dataset>/<method>_r<ratio>_s<seed>.parquet one row per KEPT sample: key, uri, label, score
    <dataset>/scores.parquet                    every sample's key and each method's score

- ``ratio`` is the fraction REMOVED (``pruning.ratios``); the file names give it in
  percent as the trial names do: ``r50`` = half removed, ``r05``, ``r12.5``; the
  full-data baseline is ``full_r00_s<seed>.parquet``.
- ``file`` in index.csv is relative to ``subsets/``; index.csv is written last and lists
  exactly this run's subsets (files of earlier configs may stay beside them).
- Subset files: ``key`` str, ``uri`` str (where the bytes are: a file path or URI,
  ``<shard>.tar#<key>`` or ``<file>.parquet#<row>``), ``label`` int64 (null when the
  dataset has none), ``score`` float64 (higher = kept first; null for ``random`` and the
  baseline). Rows follow the samples table's order.
- scores.parquet: ``key`` and one float64 column per scored method, named by its label
  with one experiment seed, ``<label>_s<seed>`` with several; ``random`` has none.

Everything is streamed: the samples table is read one part at a time and each part's
kept rows are appended to the open subset files (at most :data:`MAX_OPEN` at once).
MLflow gets one run per config (``<experiment>-subsets``, tag ``prunediff.role =
subsets``) holding index.csv, and the parquet files while they total at most
:data:`MLFLOW_MAX_BYTES` (else only the index and the ``subsets_uri`` param).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.config.schema import Config
from orchestrator.progress import say
from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table
from orchestrator.tracking.runs import log_new_params
from orchestrator.tracking.server import find_run, open_experiment, tracking_client
from orchestrator.version import provenance_tags

SUBSETS = "subsets"
INDEX = "index.csv"
SCORES = "scores.parquet"
INDEX_COLUMNS = ("dataset", "method", "ratio", "seed", "n_total", "n_kept", "file")
SUBSET_SCHEMA = pa.schema([("key", pa.string()), ("uri", pa.string()), ("label", pa.int64()),
                           ("score", pa.float64())])
UNSCORED = ("random",)          # methods whose scores are random draws: exported as null
MAX_OPEN = 16                   # subset files written in one pass over the samples table
MLFLOW_MAX_BYTES = 256 << 20


@dataclass(frozen=True)
class SubsetFile:
    """One subset to export: its grid coordinates, cache key, score key and file name."""

    dataset: str
    method: str
    ratio: float
    seed: int
    key: str
    score: str | None   # score artifact whose values go in the ``score`` column
    file: str           # relative to subsets/


def ratio_tag(ratio: float) -> str:
    """``r50`` for 0.5 (percent removed, two digits as in trial names), ``r12.5`` for 0.125."""
    pct = round(float(ratio) * 100, 6)
    return f"r{int(pct):02d}" if pct == int(pct) else f"r{pct:g}"


def subset_name(dataset: str, method: str, ratio: float, seed: int) -> str:
    """``<dataset>/<method>_r<ratio>_s<seed>.parquet``, relative to ``subsets/``."""
    return f"{dataset}/{method}_{ratio_tag(ratio)}_s{seed}.parquet"


def score_column(label: str, seed: int, seeds: Iterable[int]) -> str:
    """scores.parquet's column of a method: ``label``, or ``label_s<seed>`` with several seeds."""
    return label if len(tuple(seeds)) == 1 else f"{label}_s{seed}"


def _lookup(ids: np.ndarray, values: np.ndarray, want: np.ndarray, what: str) -> np.ndarray:
    """``values`` at ``want`` ids; ``ids`` (N,) sorted. Raises KeyError for a missing id."""
    pos = np.clip(np.searchsorted(ids, want), 0, max(len(ids) - 1, 0))
    if len(want) and (len(ids) == 0 or not np.array_equal(ids[pos], want)):
        raise KeyError(f"{what}: sample ids of the samples table are missing")
    return values[pos]


def _labels(labels: np.ndarray) -> pa.Array:
    labels = np.asarray(labels, dtype=np.int64)
    return pa.array(labels, type=pa.int64(), mask=labels < 0)


def subset_files(cache: ArtifactCache, cfg: Config, subsets: dict[tuple, str]) -> list[SubsetFile]:
    """The subsets of :func:`orchestrator.stages.score.build_subsets`, in config order."""
    order = {m.label: i for i, m in enumerate(cfg.pruning.methods)}
    dsorder = {d.name: i for i, d in enumerate(cfg.data.datasets)}
    out = []
    for (ds, method, ratio, seed), key in subsets.items():
        score = cache.load_json(key).get("score")
        unscored = method in order and cfg.method(method).name in UNSCORED
        out.append(SubsetFile(ds, method, float(ratio), int(seed), key,
                              None if unscored else score, subset_name(ds, method, ratio, seed)))
    return sorted(out, key=lambda s: (dsorder.get(s.dataset, 0), order.get(s.method, -1),
                                      s.ratio, s.seed))


def _write_group(cache: ArtifactCache, fs: Any, base: str, table: Table,
                 group: list[SubsetFile]) -> dict[str, int]:
    """One pass over the samples table writing every file of ``group``; rows per file."""
    kept = {s.file: cache.load_arrays(s.key)["ids"].astype(np.int64) for s in group}
    scores = {s.score: cache.load_arrays(s.score) for s in group if s.score}
    writers: dict[str, Any] = {}
    counts = dict.fromkeys(kept, 0)
    try:
        for s in group:
            fs.create_dir(fsutil.join(base, os.path.dirname(s.file)), recursive=True)
            writers[s.file] = pq.ParquetWriter(fsutil.join(base, s.file), SUBSET_SCHEMA,
                                               filesystem=fs)
        for part in table.iter_parts(["key", "uri", "label"]):
            for s in group:
                mask = np.isin(part["id"], kept[s.file])
                if not mask.any():
                    continue
                ids = part["id"][mask]
                if s.score:
                    sc = scores[s.score]
                    col = pa.array(_lookup(sc["ids"], sc["scores"], ids, s.score), pa.float64())
                else:
                    col = pa.nulls(len(ids), pa.float64())
                writers[s.file].write_table(pa.Table.from_arrays(
                    [pa.array(part["key"][mask], pa.string()),
                     pa.array(part["uri"][mask], pa.string()), _labels(part["label"][mask]),
                     col], schema=SUBSET_SCHEMA))
                counts[s.file] += int(len(ids))
    finally:
        for w in writers.values():
            w.close()
    for s in group:
        if counts[s.file] != len(kept[s.file]):
            raise RuntimeError(f"export[{s.dataset}]: {s.file} got {counts[s.file]} of "
                               f"{len(kept[s.file])} kept samples from the samples table")
    return counts


def write_scores(cache: ArtifactCache, fs: Any, path: str, table: Table,
                 columns: dict[str, str]) -> None:
    """scores.parquet: ``key`` and one float64 column per ``columns`` entry (name -> score key)."""
    scores = {name: cache.load_arrays(key) for name, key in columns.items()}
    schema = pa.schema([("key", pa.string())] + [(c, pa.float64()) for c in columns])
    with pq.ParquetWriter(path, schema, filesystem=fs) as w:
        for part in table.iter_parts(["key"]):
            cols = [pa.array(part["key"], pa.string())]
            cols += [pa.array(_lookup(sc["ids"], sc["scores"], part["id"], columns[c]),
                              pa.float64()) for c, sc in scores.items()]
            w.write_table(pa.Table.from_arrays(cols, schema=schema))


def _write_index(fs: Any, path: str, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(INDEX_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with fs.open_output_stream(path) as f:
        f.write(buf.getvalue().encode())


def export_subsets(cache: ArtifactCache, cfg: Config, arts: dict[str, Any],
                   subsets: dict[tuple, str]) -> list[dict]:
    """Write ``<output_dir>/subsets/`` (see the module doc); returns index.csv's rows.

    Args:
        arts: dataset name -> ``DatasetArtifacts`` (``latents`` = the samples table's key).
        subsets: ``build_subsets``' ``(dataset, method, ratio, seed) -> subset key``.
    """
    fs, base = fsutil.filesystem(fsutil.join(cfg.experiment.output_dir, SUBSETS))
    fs.create_dir(base, recursive=True)
    files = subset_files(cache, cfg, subsets)
    rows = []
    for ds in cfg.data.datasets:
        mine = [s for s in files if s.dataset == ds.name]
        table = Table(cache, arts[ds.name].latents)
        fs.create_dir(fsutil.join(base, ds.name), recursive=True)
        columns = {score_column(s.method, s.seed, cfg.experiment.seeds): s.score
                   for s in mine if s.score}
        write_scores(cache, fs, fsutil.join(base, ds.name, SCORES), table, columns)
        for i in range(0, len(mine), MAX_OPEN):
            counts = _write_group(cache, fs, base, table, mine[i:i + MAX_OPEN])
            rows += [{"dataset": s.dataset, "method": s.method, "ratio": s.ratio, "seed": s.seed,
                      "n_total": table.rows, "n_kept": counts[s.file], "file": s.file}
                     for s in mine[i:i + MAX_OPEN]]
        say("export[%s]: %d subset file(s) and %s", ds.name, len(mine), SCORES)
    _write_index(fs, fsutil.join(base, INDEX), rows)   # last: the export is complete
    say("subsets: %s", fsutil.join(cfg.experiment.output_dir, SUBSETS, INDEX))
    return rows


def _stage_for_mlflow(cfg: Config, rows: list[dict], local: str) -> bool:
    """Copy index.csv (and the parquet files when small enough) to ``local``; True if all."""
    root = fsutil.join(cfg.experiment.output_dir, SUBSETS)
    fs, base = fsutil.filesystem(root)
    names = [INDEX] + [r["file"] for r in rows]
    names += sorted({f"{r['dataset']}/{SCORES}" for r in rows})
    sizes = {n: fs.get_file_info(fsutil.join(base, n)).size or 0 for n in names}
    whole = sum(sizes.values()) <= MLFLOW_MAX_BYTES
    for name in names if whole else [INDEX]:
        os.makedirs(os.path.dirname(os.path.join(local, name)), exist_ok=True)
        with fs.open_input_stream(fsutil.join(base, name)) as src, \
                open(os.path.join(local, name), "wb") as dst:
            dst.write(src.read())
    return whole


def log_subsets(cfg: Config, rows: list[dict], fresh: bool = False) -> str:
    """Log the export to MLflow (run ``<experiment>-subsets``, reused per config unless
    ``fresh``); returns the run id."""
    client = tracking_client(cfg.mlflow.tracking_uri)
    exp_id = open_experiment(client, cfg.mlflow.experiment_name, cfg.mlflow.artifact_location)
    tags = {**provenance_tags(cfg.config_hash()), "prunediff.role": "subsets"}
    found = None if fresh else find_run(client, exp_id, {
        "prunediff.config_hash": tags["prunediff.config_hash"], "prunediff.role": "subsets"})
    rid = found.info.run_id if found else client.create_run(
        exp_id, run_name=f"{cfg.experiment.name}-subsets", tags=tags).info.run_id
    with tempfile.TemporaryDirectory(prefix="prunediff-subsets-") as d:
        whole = _stage_for_mlflow(cfg, rows, d)
        params = {"subsets_uri": fsutil.join(cfg.experiment.output_dir, SUBSETS),
                  "n_subsets": len(rows)}
        log_new_params(client, rid, params)
        client.set_tag(rid, "prunediff.subset_files_logged", str(whole).lower())
        client.log_artifacts(rid, d, SUBSETS)
    client.set_terminated(rid, "FINISHED")
    return rid
