"""Datasets: the ``SOURCES`` registry (``sources``), its base types (``base``), image
folders (``folders``), the streaming sources ``parquet`` and ``webdataset`` (``stream``,
``parquet``, ``webdataset``: a reader per format, selection by key hash), listings
(``listing``), image decoding/resizing (``images``) and the local executor's rows in memory
(``local_rows``). No Ray: the Ray Data views of the sources are
``orchestrator.runtime.ray_sources`` (the Ray executor's).

``DatasetConfig``, one ``data.datasets[]`` entry of the config, is defined here: every
source reads it, and the config (``orchestrator.config.schema``, which re-exports it)
builds it. This module imports nothing of ours, so the data package never imports the
config package.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetConfig"]


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset entry; ``source`` is an ``orchestrator.data.sources.SOURCES`` key."""

    name: str
    source: str
    path: str | None = None
    split: str | None = None
    resolution: int = 32
    limit: int | None = None
    conditional: bool = False
    skew: dict[str, float] | None = None   # label (as str) or "*" -> keep fraction
    class_subfolders: bool = False          # image_folder: class = first subfolder
    seed: int = 0                           # seeds the holdout, limit / skew subsample
    holdout: float = 0.1                    # share held out as the reference (sources
                                            # without a reference split: digits, folders,
                                            # parquet, webdataset: by a hash of seed and key)
    image_column: str = "image"             # parquet: encoded bytes, or a struct with a
                                            # `bytes` field (Hugging Face `datasets`)
    label_column: str | None = None         # parquet: integer label column (none: unlabelled);
                                            # webdataset: label member extension (none: `cls`)
    key_column: str | None = None           # parquet: the sample key (none: `<file>:<row>`)
