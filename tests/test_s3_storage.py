"""s3:// storage against a local S3 endpoint (moto's server): no network, no AWS account.

pyarrow reads the endpoint from ``AWS_ENDPOINT_URL``, as it would a MinIO or other S3
service; the code under test is the same that reaches real S3 (``pyarrow.fs``). GCS
(gs://) goes through the same ``fsutil`` calls but has no local emulator here.
"""

from __future__ import annotations

import numpy as np
import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")

from orchestrator.storage import fsutil  # noqa: E402
from orchestrator.storage.cache import ArtifactCache, CacheMiss  # noqa: E402
from tests.s3_helpers import bucket_keys, local_s3  # noqa: E402

BUCKET = "prunediff-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    with local_s3(BUCKET) as env:
        yield env


def test_cache_round_trip_on_s3(s3_endpoint):
    import boto3

    cache = ArtifactCache(f"s3://{BUCKET}/run1/cache")
    assert cache.remote
    key = cache.key("score", 1, method="random", seed=0)
    assert not cache.has(key, "arrays")
    x = np.random.default_rng(0).normal(size=(7, 3))
    uri = cache.save_arrays(key, scores=x, ids=np.arange(7))
    assert uri.startswith(f"s3://{BUCKET}/run1/cache/score/")
    cache.save_json(key, {"k": 3})
    again = ArtifactCache(f"s3://{BUCKET}/run1/cache")       # a fresh process's view
    assert again.has(key, "arrays") and again.has(key, "json")
    np.testing.assert_array_equal(again.load_arrays(key)["scores"], x)
    assert again.load_json(key) == {"k": 3}
    # the objects really are in the bucket, each with its checksum sidecar
    s3 = boto3.client("s3", endpoint_url=s3_endpoint["AWS_ENDPOINT_URL"])
    names = bucket_keys(s3_endpoint, BUCKET, "run1/")
    assert {n.rsplit("/", 1)[1].split(".", 1)[1] for n in names} >= {"npz", "npz.sha256", "json",
                                                                    "json.sha256"}
    # a corrupted object is detected, deleted and reported missing (so it is rebuilt)
    npz = next(n for n in names if n.endswith(".npz"))
    s3.put_object(Bucket=BUCKET, Key=npz, Body=b"garbage")
    with pytest.raises(CacheMiss):
        again.load_arrays(key)
    assert not cache.has(key, "arrays") and cache.has(key, "json")


def test_remove_dir_on_s3(s3_endpoint):
    cache = ArtifactCache(f"s3://{BUCKET}/run2/cache")
    cache.save_json(cache.key("trial", 1, i=0), {"ok": True})
    assert fsutil.remove_dir(f"s3://{BUCKET}/run2") is True
    assert not cache.has(cache.key("trial", 1, i=0), "json")
    assert fsutil.remove_dir(f"s3://{BUCKET}/run2") is False
