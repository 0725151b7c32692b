"""Cluster configs: Ray's own cluster-config schema, and the KubeRay RayJob's required fields."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "experiments" / "clusters"
LAUNCHER = ["aws.yaml", "gcp.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_validates(name):
    pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates ray-schema.json")
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(name)
    # Raw file against ray-schema.json first (before defaults could hide a mistake).
    import json

    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    validate_config(prepare_config(copy.deepcopy(raw)))


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_shape(name):
    cfg = _load(name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert "min_workers" not in head or head["min_workers"] == 0
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers and all(v["min_workers"] == 0 and v["max_workers"] > 0 for v in workers.values())
    assert "gpu" in cfg["docker"]["worker_image"] and "cpu" in cfg["docker"]["head_image"]
    assert any("pip install" in c and "prunediff" in c for c in cfg["setup_commands"])
    assert "/home/ray/prunediff" in cfg["file_mounts"]


def test_launcher_schema_rejects_mistakes():
    pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates ray-schema.json")
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = _load("aws.yaml")
    bad["max_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = _load("aws.yaml")
    bad["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))


def test_rayjob_manifest():
    import ray

    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    entry = spec["entrypoint"].split()
    assert entry[:3] == ["python", "-m", "orchestrator.run"]
    assert (ROOT / entry[3]).is_file(), f"entrypoint config {entry[3]} missing"
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"]
        limits = container["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
