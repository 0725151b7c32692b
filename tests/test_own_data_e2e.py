"""Issue 23's done-when: own data in three formats on S3, pruned with ``--until select``.

An image folder (class subfolders, with a truncated PNG and an empty JPEG among 60 good
images), a parquet file (Hugging Face layout) and two WebDataset shards go to the local
S3 endpoint (tests/s3_helpers.py); one config names all three; ``python -m
orchestrator.run CFG --until select`` runs as a subprocess with its output in the bucket.
Then: exit 0, nothing trained or evaluated, index.csv lists every subset, and every key
of every subset file opens, through its ``uri`` and the docs recipe's ``read_bytes``,
the very bytes that were uploaded under that key.
"""

from __future__ import annotations

import csv
import io
import tarfile

import numpy as np
import pytest
import yaml

pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")

from tests.pipeline_helpers import child_env, cli  # noqa: E402
from tests.s3_helpers import bucket_keys, local_s3  # noqa: E402
from tests.test_export_recipe import recipe_namespace  # noqa: E402

BUCKET = "own-data-e2e"
DATASETS = ("photos", "hf", "shards")


def _image(rng: np.random.Generator, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _put(s3, key: str, data: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def upload_sources(s3) -> dict[str, dict[str, bytes]]:
    """Upload the three sources; returns dataset -> {key: uploaded bytes} of good samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    good: dict[str, dict[str, bytes]] = {d: {} for d in DATASETS}
    for i in range(60):                                       # image folder
        key = f"{('cat', 'dog')[i % 2]}/{i:03d}.png"
        good["photos"][key] = _image(rng, "PNG")
        _put(s3, f"src/photos/{key}", good["photos"][key])
    _put(s3, "src/photos/cat/truncated.png", _image(rng, "PNG")[:60])
    _put(s3, "src/photos/dog/empty.jpg", b"")
    blobs = [_image(rng, "PNG") for _ in range(50)]           # parquet, HF's Image layout
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": [{"bytes": b, "path": None} for b in blobs],
                             "label": [i % 3 for i in range(50)]}), buf, row_group_size=16)
    _put(s3, "src/hf/train.parquet", buf.getvalue())
    good["hf"] = {f"train.parquet:{i}": b for i, b in enumerate(blobs)}
    for shard in range(2):                                    # WebDataset shards
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i in range(25):
                key = f"s{shard}-{i:04d}"
                good["shards"][key] = _image(rng, "JPEG")
                for ext, data in (("jpg", good["shards"][key]), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        _put(s3, f"src/shards/shard-{shard:03d}.tar", buf.getvalue())
    return good


def config(tmp_path) -> str:
    """A smoke-sized config over the three S3 datasets, output in the bucket."""
    src = f"s3://{BUCKET}/src"
    cfg = {
        "experiment": {"name": "own", "seeds": [0], "output_dir": f"s3://{BUCKET}/out"},
        "data": {"max_skipped": 0.05, "datasets": [
            {"name": "photos", "source": "image_folder", "path": f"{src}/photos",
             "class_subfolders": True, "resolution": 16},
            {"name": "hf", "source": "parquet", "path": f"{src}/hf", "label_column": "label",
             "resolution": 16},
            {"name": "shards", "source": "webdataset", "path": f"{src}/shards",
             "resolution": 16}]},
        "autoencoder": {"preset": "vq-f4-c4", "train_steps": 5, "batch_size": 16},
        "embed": {"embedders": ["pixels"], "batch_size": 64},
        "pruning": {"ratios": [0.5], "baseline": True, "methods": [
            {"name": "random"}, {"name": "clustering", "embedder": "pixels", "k": 3}]},
        "eval": {"embedders": ["pixels"], "metrics": ["fd"], "num_real": 10},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "resources": {"num_workers": 1, "use_gpu": False, "actor_pool_size": 1,
                      "max_failures": 0},
    }
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _read(uri: str) -> bytes:
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(inner) as f:
        return f.read()


def _table(uri: str):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(_read(uri)))


@pytest.mark.ray
@pytest.mark.timeout(1500)
def test_until_select_on_three_formats_in_s3(tmp_path):
    import boto3

    with local_s3(BUCKET) as aws:
        good = upload_sources(boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"]))
        cfg, env = config(tmp_path), child_env(**aws)
        dry = cli([cfg, "--dry-run", "--until", "select"], timeout=300, env=env)
        assert dry.returncode == 0, dry.stderr[-3000:]
        plan = dry.stdout.split("stages (--until select):\n")[1].split("\n---")[0]
        assert "no VQ-VAE" in plan.splitlines()[0], plan
        assert [ln.split()[:2] for ln in plan.splitlines()] == [
            ["encode", "run"], ["embed", "run"], ["proxy", "skip"], ["score", "run"],
            ["select", "run"], ["export", "run"], ["sweep", "skip"], ["report", "skip"]]

        p = cli([cfg, "--until", "select"], timeout=1200, env=env)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        keys = bucket_keys(aws, BUCKET, "out/")
        stages = {k.split("/")[2] for k in keys if k.startswith("out/cache/")}
        assert {"samples", "embed", "score", "subset"} <= stages, sorted(stages)
        # random and clustering need no latents: no VQ-VAE is trained, nothing encoded
        assert not stages & {"vqvae", "latents", "proxy", "trial", "reference", "classifier"}, \
            sorted(stages)
        assert not any(k.startswith("out/report/") for k in keys)

        index = list(csv.DictReader(io.StringIO(_read(f"s3://{BUCKET}/out/subsets/index.csv")
                                                .decode())))
        assert list(index[0]) == ["dataset", "method", "ratio", "seed", "n_total", "n_kept",
                                  "file"]
        assert [(r["dataset"], r["method"], r["file"]) for r in index] == [
            (d, m, f"{d}/{m}_{'r00' if m == 'full' else 'r50'}_s0.parquet")
            for d in DATASETS for m in ("full", "random", "clustering")]
        read_bytes = recipe_namespace(blocks=1)["read_bytes"]
        for r in index:
            t = _table(f"s3://{BUCKET}/out/subsets/{r['file']}")
            n_total, n_kept = int(r["n_total"]), int(r["n_kept"])
            assert t.num_rows == n_kept == (n_total if r["method"] == "full"
                                            else round(n_total / 2)), r
            assert n_total <= len(good[r["dataset"]]) and n_total > 0.7 * len(good[r["dataset"]])
            assert (t.column("score").null_count == n_kept) == (r["method"] != "clustering")
            assert t.column("label").null_count == 0
            for key, uri in zip(t.column("key").to_pylist(), t.column("uri").to_pylist()):
                assert key in good[r["dataset"]], (r["file"], key)   # bad files never kept
                assert read_bytes(uri) == good[r["dataset"]][key], (r["file"], key, uri)
        for d in DATASETS:
            scores = _table(f"s3://{BUCKET}/out/subsets/{d}/scores.parquet")
            assert scores.column_names == ["key", "clustering"]
        skipped = _read(f"s3://{BUCKET}/out/data/photos/skipped.csv").decode()
        assert "cat/truncated.png" in skipped and "dog/empty.jpg" in skipped, skipped
