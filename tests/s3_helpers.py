"""A local S3 endpoint for the storage tests: moto's threaded server, one bucket.

pyarrow, Ray (through pyarrow) and MLflow (through boto3) find it through the
``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL`` variables, as they would a MinIO
or other S3-compatible service; nothing reaches the network.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from tests.pipeline_helpers import patched_environ


@contextlib.contextmanager
def local_s3(bucket: str) -> Iterator[dict[str, str]]:
    """Start the server, create ``bucket``, set the AWS variables; yields them."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": url, "MLFLOW_S3_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        with patched_environ(env):
            boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
            yield env
    finally:
        server.stop()


def bucket_keys(env: dict[str, str], bucket: str, prefix: str) -> set[str]:
    """Object keys under ``prefix`` (directory markers left out)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys |= {o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")}
    return keys
