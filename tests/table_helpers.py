"""Sharded tables written in one go for tests (the stages write them part by part)."""

from __future__ import annotations

import numpy as np

from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import finish_table, write_part


def save_table(cache: ArtifactCache, table: str, parts: int = 2, meta: dict | None = None,
               **columns: np.ndarray) -> str:
    """Write ``columns`` (``id`` defaults to 0..N-1) as the table keyed ``table`` in
    ``parts`` parts, the rows dealt out in reverse order so a reader must sort them;
    returns ``table``."""
    n = len(next(iter(columns.values())))
    columns.setdefault("id", np.arange(n, dtype=np.int64))
    order = np.arange(n)[::-1]
    metas = [write_part(cache, table, f"part-{i}", {c: v[chunk] for c, v in columns.items()})
             for i, chunk in enumerate(np.array_split(order, parts)) if len(chunk)]
    finish_table(cache, table, metas, meta)
    return table
