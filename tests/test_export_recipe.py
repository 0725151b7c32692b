"""docs/own-data.md's recipe, run as written: its python blocks load an exported subset
into a torch ``Dataset`` and a Hugging Face ``datasets.Dataset``; ``read_bytes`` opens
the bytes of a folder file, a parquet row and a tar member by ``uri``."""

from __future__ import annotations

import io
import re
import tarfile
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, minimal_config
from orchestrator.config import config_from_dict
from orchestrator.stages import export
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import finish_table, write_part

DOC = REPO / "docs" / "own-data.md"
DOC_OUTPUT = "outputs/mine"


def recipe_blocks() -> list[str]:
    """The ```python blocks of docs/own-data.md, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def recipe_namespace(output_dir: str | None = None, blocks: int | None = None) -> dict:
    """Exec the first ``blocks`` recipe blocks (all: None) with the doc's output folder
    replaced by ``output_dir``; returns the namespace (``read_bytes``, ``train``, ...)."""
    ns: dict = {"__name__": "own_data_recipe"}
    for code in recipe_blocks()[:blocks]:
        exec(compile(code.replace(DOC_OUTPUT, output_dir or DOC_OUTPUT), str(DOC), "exec"), ns)
    return ns


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), i * 9 % 256, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _sources(root: Path) -> dict[str, bytes]:
    """Ten folder files, a parquet file of ten HF-style rows (two row groups), a tar
    shard of ten samples (with label members); returns uri -> bytes."""
    want = {}
    for i in range(10):
        path = root / "photos" / f"c{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(i))
        want[str(path)] = _png(i)
    blobs = [_png(10 + i) for i in range(10)]
    table = pa.table({"image": pa.array([{"bytes": b, "path": None} for b in blobs]),
                      "label": pa.array(range(10))})
    pq.write_table(table, root / "hf.parquet", row_group_size=4)
    want.update({f"{root}/hf.parquet#{i}": b for i, b in enumerate(blobs)})
    with tarfile.open(root / "shard-0.tar", "w") as tar:
        for i in range(10):
            for ext, data in (("cls", b"1"), ("png" if i % 2 else "jpg", _png(20 + i))):
                info = tarfile.TarInfo(f"dir.v1/s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            want[f"{root}/shard-0.tar#dir.v1/s{i:03d}"] = _png(20 + i)
    return want


@pytest.fixture
def exported(tmp_path):
    """An export of dataset ``photos`` whose samples live in all three formats."""
    want = _sources(tmp_path / "src")
    cache = ArtifactCache(str(tmp_path / "cache"))
    uris = list(want)
    ids = np.arange(len(uris), dtype=np.int64) * 7 + 3
    labels = np.array([i % 3 - 1 for i in range(len(uris))], dtype=np.int64)
    parts = [write_part(cache, "latents/x", f"p{k}", {
        "id": ids[sl], "key": np.array([f"k{i}" for i in ids[sl]], dtype=object),
        "uri": np.array(uris[sl.start:sl.stop], dtype=object), "label": labels[sl]})
        for k, sl in enumerate([slice(0, 17), slice(17, 30)])]
    finish_table(cache, "latents/x", parts)
    cfg = config_from_dict(minimal_config(
        experiment={"name": "t", "seeds": [0], "output_dir": str(tmp_path / "out")},
        data={"datasets": [{"name": "photos", "source": "digits", "resolution": 16}]}))
    subsets = {}
    for label in ("random", "clustering"):
        scores = np.random.default_rng(len(label)).normal(size=len(ids))
        cache.save_arrays(f"score/{label}", ids=ids, scores=scores)
        kept = np.sort(np.argsort(-scores)[:15])
        cache.save_arrays(f"subset/{label}", indices=kept, ids=ids[kept])
        cache.save_json(f"subset/{label}", {"score": f"score/{label}"})
        subsets[("photos", label, 0.5, 0)] = f"subset/{label}"
    arts = {"photos": types.SimpleNamespace(latents="latents/x")}
    export.export_subsets(cache, cfg, arts, subsets)
    return tmp_path / "out", want, dict(zip(uris, labels.tolist()))


def test_read_bytes_opens_every_kind_of_uri(exported):
    out, want, _ = exported
    read_bytes = recipe_namespace(blocks=1)["read_bytes"]
    for uri, data in want.items():
        assert read_bytes(uri) == data, uri


def test_the_recipe_loads_a_subset_into_torch_and_datasets(exported, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out, want, labels = exported
    ns = recipe_namespace(str(out))
    train, rows = ns["train"], pq.read_table(out / "subsets" / "photos"
                                             / "clustering_r50_s0.parquet").to_pylist()
    assert len(train) == len(rows) == 15
    for i, row in enumerate(rows):
        image, label = train[i]
        assert np.array_equal(np.asarray(image), np.asarray(
            Image.open(io.BytesIO(want[row["uri"]])).convert("RGB")))
        assert label == labels[row["uri"]]          # -1 stays -1 (null in the file)
    hf = ns["hf"]
    assert hf.num_rows == 15 and set(hf.column_names) == {"key", "uri", "label", "score", "image"}
    assert np.array_equal(np.asarray(ns["first"].convert("RGB")), np.asarray(train[0][0]))
    assert hf[0]["score"] == pytest.approx(rows[0]["score"])


def test_the_doc_names_the_export_formats():
    text = DOC.read_text()
    assert "`dataset, method, ratio, seed, n_total, n_kept, file`" in text
    assert "<method>_r<ratio>_s<seed>.parquet" in text and "--until select" in text
    assert export.subset_name("photos", "clustering", 0.5, 0) == "photos/clustering_r50_s0.parquet"
