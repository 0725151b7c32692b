"""Config loading: every shipped YAML, each kind of error (naming its key), resolution."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO, minimal_config
from orchestrator.config import ConfigError, config_from_dict, dump_yaml, load_config
from orchestrator.config.plan import TrialPlan

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def _load(raw, tmp_path, overrides=()):
    return config_from_dict(raw, overrides, base_dir=tmp_path)


def _error(raw, tmp_path, overrides=()) -> str:
    with pytest.raises(ConfigError) as e:
        _load(raw, tmp_path, overrides)
    return str(e.value)


def test_experiments_found():
    names = {p.name for p in EXPERIMENTS}
    assert {"quickstart.yaml", "smoke.yaml", "skewed.yaml", "paper.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_loads(path: Path, tmp_path: Path):
    cfg = load_config(path, base_dir=tmp_path)
    trials = list(TrialPlan.from_config(cfg))
    assert trials and len({t.name for t in trials}) == len(trials)
    n_ds, n_seeds = len(cfg.data.datasets), len(cfg.experiment.seeds)
    per = int(cfg.pruning.baseline) + len(cfg.pruning.methods) * len(cfg.pruning.ratios)
    assert len(trials) == n_ds * n_seeds * per
    # the resolved YAML loads back to the same config
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)), base_dir=tmp_path)
    assert again == cfg and again.config_hash() == cfg.config_hash()


def test_paper_grid_matches_the_paper(tmp_path: Path):
    cfg = load_config(REPO / "experiments" / "paper.yaml", base_dir=tmp_path)
    assert cfg.pruning.ratios == (0.25, 0.5, 0.75, 0.9)
    assert {m.name for m in cfg.pruning.methods} == {
        "random", "monotonicity", "grand", "el2n", "moso", "clustering"}
    assert (cfg.model.preset, cfg.train.steps, cfg.train.batch_size) == ("DiT-XL/2", 120000, 256)
    assert (cfg.train.lr, cfg.train.ema_decay) == (1e-4, 0.9999)
    clip = cfg.method("clustering_clip")
    assert clip.params_for("celebahq")["k"] == 24 and clip.params_for("imagenet")["k"] == 1000
    assert [d.conditional for d in cfg.data.datasets] == [False, True]


def test_trial_grid_has_one_baseline_per_dataset_and_seed(tmp_path: Path):
    raw = minimal_config()
    raw["experiment"]["seeds"] = [0, 1]
    raw["pruning"]["ratios"] = [0.25, 0.9]
    trials = list(TrialPlan.from_config(_load(raw, tmp_path)))
    assert len(trials) == 2 * (1 + 2 * 2)
    full = [t for t in trials if t.method == "full"]
    assert [(t.dataset, t.ratio, t.seed) for t in full] == [("digits", 0.0, 0), ("digits", 0.0, 1)]
    assert {(t.method, t.ratio) for t in trials if t.method != "full"} == {
        ("random", 0.25), ("random", 0.9), ("clustering", 0.25), ("clustering", 0.9)}
    raw["pruning"]["baseline"] = False
    assert all(t.method != "full" for t in TrialPlan.from_config(_load(raw, tmp_path)))


def test_defaults_resolve_to_absolute_paths(tmp_path: Path):
    cfg = _load(minimal_config(), tmp_path)
    out = tmp_path / "out"
    assert cfg.experiment.output_dir == str(out)
    assert cfg.mlflow.tracking_uri == f"sqlite:///{out}/mlflow.db"
    assert cfg.mlflow.tracking_uri.startswith("sqlite:////")
    assert cfg.mlflow.experiment_name == "t"
    assert cfg.storage.cache_dir == f"{out}/cache"
    assert cfg.storage.ray_storage == f"{out}/ray_results"
    assert cfg.method("random").label == "random" and cfg.method("random").params == {}


def test_remote_output_dir_needs_a_tracking_uri(tmp_path: Path):
    raw = minimal_config()
    raw["experiment"]["output_dir"] = "s3://bucket/runs"
    assert _error(raw, tmp_path).startswith("mlflow.tracking_uri:")
    raw["mlflow"] = {"tracking_uri": "http://mlflow:5000"}
    cfg = _load(raw, tmp_path)
    assert cfg.storage.cache_dir == "s3://bucket/runs/cache"


def test_config_hash_is_stable_and_ignores_paths(tmp_path: Path):
    raw = minimal_config()
    h = _load(raw, tmp_path).config_hash()
    reordered = dict(reversed(list(copy.deepcopy(raw).items())))
    assert _load(reordered, tmp_path).config_hash() == h
    assert _load(raw, tmp_path, ["experiment.output_dir=/elsewhere"]).config_hash() == h
    assert _load(raw, tmp_path, ["train.steps=7"]).config_hash() != h


def test_overrides(tmp_path: Path):
    cfg = _load(minimal_config(), tmp_path, [
        "train.steps=7", "pruning.ratios=[0.25,0.5]", "data.datasets[0].limit=50",
        "sample.method=euler", "experiment.seeds=[3, 4]", "pruning.methods[-1].k=3",
        "storage.cache_dir=cache2"])
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.pruning.ratios == (0.25, 0.5)
    assert cfg.data.datasets[0].limit == 50
    assert cfg.sample.method == "euler" and cfg.experiment.seeds == (3, 4)
    assert cfg.method("clustering").params["k"] == 3
    assert cfg.storage.cache_dir == str(tmp_path / "cache2")


@pytest.mark.parametrize("override, key", [
    ("train.steps", "--set train.steps: expected KEY=VALUE"),
    ("data.datasets[3].limit=5", "--set data.datasets[3].limit: index out of range"),
    ("experiment.name.x=1", "--set experiment.name.x: experiment.name is not a mapping"),
    ("train.stepz=1", "train.stepz: unknown key"),
    ("bogus.x=1", "bogus: unknown section"),
])
def test_bad_overrides(override: str, key: str, tmp_path: Path):
    assert _error(minimal_config(), tmp_path, [override]).startswith(key)


def _set(raw: dict, dotted: str, value) -> dict:
    """Helper: raw config with one nested value replaced (list indices as ints)."""
    raw = copy.deepcopy(raw)
    node = raw
    parts = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for p in parts[:-1]:
        node = node.setdefault(p, {}) if isinstance(p, str) else node[p]
    node[parts[-1]] = value
    return raw


@pytest.mark.parametrize("dotted, value, key", [
    ("train.stepz", 1, "train.stepz: unknown key"),
    ("train.steps", 0, "train.steps: must be positive"),
    ("train.batch_size", -4, "train.batch_size: must be positive"),
    ("proxy.steps", 0, "proxy.steps: must be positive"),
    ("sample.batch_size", 0, "sample.batch_size: must be positive"),
    ("embed.batch_size", 0, "embed.batch_size: must be positive"),
    ("train.steps", "many", "train.steps: expected an integer"),
    ("train.lr", True, "train.lr: expected a number"),
    ("pruning.ratios", [0.5, 1.0], "pruning.ratios[1]: must be in [0, 1)"),
    ("pruning.ratios", [-0.1], "pruning.ratios[0]: must be in [0, 1)"),
    ("pruning.ratios", [0.5, 0.5], "pruning.ratios: duplicate"),
    ("model.preset", "DiT-Huge/1", "model.preset: unknown name 'DiT-Huge/1' (valid: "),
    ("proxy.model", "nope", "proxy.model: unknown name"),
    ("autoencoder.preset", "vq-f99", "autoencoder.preset: unknown name"),
    ("embed.embedders", ["pixels", "nope"], "embed.embedders[1]: unknown name"),
    ("eval.metrics", ["fd", "fid2"], "eval.metrics[1]: unknown name"),
    ("eval.embedder", "pixels", "eval.embedder: replaced by eval.embedders"),
    ("eval.embedders", ["pixels", "nope"], "eval.embedders[1]: unknown name 'nope'"),
    ("eval.embedders", [], "eval.embedders: needs at least one"),
    ("eval.embedders", ["pixels", "pixels"], "eval.embedders: duplicate"),
    ("eval.primary", "clip", "eval.primary: 'clip' is not one of eval.embedders"),
    ("eval.classifier", {"steps": 0}, "eval.classifier.steps: must be positive"),
    ("eval.classifier", {"test_share": 1.0}, "eval.classifier.test_share: must be in (0, 1)"),
    ("eval.classifier", {"epochs": 3}, "eval.classifier.epochs: unknown key"),
    ("embed.weights", {"classifier": "/x.pt"}, "embed.weights.classifier: this space is trained"),
    ("sample.method", "rk4", "sample.method: 'rk4' is not one of euler, heun"),
    ("proxy.noise", "common", "proxy.noise: 'common' is not one of per_sample, shared"),
    ("proxy.grand_params", "last", "proxy.grand_params: 'last' is not one of output, all"),
    ("proxy.grand_draws", 0, "proxy.grand_draws: must be positive"),
    ("experiment.seeds", [], "experiment.seeds: needs at least one seed"),
    ("data.datasets.0.source", "mnist", "data.datasets[0].source: unknown name 'mnist'"),
    ("data.datasets.0.limit", 0, "data.datasets[0].limit: must be positive"),
    ("data.datasets.0.skew", {0: 1.5}, "data.datasets[0].skew.0: keep fraction"),
    ("data.datasets.0.colour", "red", "data.datasets[0].colour: unknown key"),
    ("pruning.methods.1.name", "kmeans", "pruning.methods[1].name: unknown name 'kmeans'"),
    ("pruning.methods.1.k", 1000, "pruning.methods[1].k: k=1000 clusters exceeds the 100"),
    ("pruning.methods.1.k", 0, "pruning.methods[1].k:"),
    ("pruning.methods.1.keep", "closest", "pruning.methods[1].keep:"),
    ("pruning.methods.1.embedder", "clip", "pruning.methods[1].embedder: 'clip' must also"),
    ("pruning.methods.1.label", "random", "pruning.methods[1].label: duplicate label"),
    ("pruning.methods.1.label", "full", "pruning.methods[1].label: 'full' is reserved"),
    ("pruning.methods.0.bogus", 3, "pruning.methods[0].bogus:"),
    ("pruning.methods.1.per_dataset", {"cifar": {"k": 2}},
     "pruning.methods[1].per_dataset.cifar: no dataset"),
    ("pruning.methods.1.per_dataset", {"digits": {"k": 500}},
     "pruning.methods[1].per_dataset.digits.k: k=500"),
    ("resources.cpus_per_worker", "lots", "resources.cpus_per_worker: 'lots' is not one of auto"),
])
def test_config_errors_name_their_key(dotted: str, value, key: str, tmp_path: Path):
    assert _error(_set(minimal_config(), dotted, value), tmp_path).startswith(key)


def test_missing_data_path_is_an_error(tmp_path: Path, fmnist_dir: Path):
    ds = {"name": "f", "source": "fashion_mnist", "path": str(fmnist_dir), "limit": 50}
    raw = minimal_config(data={"datasets": [ds]})
    assert _load(raw, tmp_path).data.datasets[0].path == str(fmnist_dir)
    raw["data"]["datasets"][0]["path"] = str(tmp_path / "nowhere")
    assert _error(raw, tmp_path).startswith("data.datasets[0].path: no train-images-idx3-ubyte")
    folder = {"name": "g", "source": "image_folder", "path": str(tmp_path / "none")}
    msg = _error(minimal_config(data={"datasets": [folder]}), tmp_path)
    assert msg.startswith("data.datasets[0].path: directory not found")


def test_k_is_checked_against_the_skewed_count(tmp_path: Path, fmnist_dir: Path):
    # 20 images per label; label 0 whole, the rest at 10% -> 20 + 9 * 2 = 38 images
    ds = {"name": "f", "source": "fashion_mnist", "path": str(fmnist_dir),
          "skew": {0: 1.0, "*": 0.1}}
    raw = minimal_config(data={"datasets": [ds]})
    raw["pruning"]["methods"][1]["k"] = 38
    _load(raw, tmp_path)
    raw["pruning"]["methods"][1]["k"] = 39
    assert _error(raw, tmp_path).startswith("pruning.methods[1].k: k=39 clusters exceeds the 38")


def test_unlabelled_sources_cannot_be_conditional(tmp_path: Path):
    from PIL import Image

    (tmp_path / "imgs" / "a").mkdir(parents=True)   # readable images: the folder probe passes,
    for i in range(10):                              # and the held-out reference is not empty
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a" / f"{i}.png")
    ds = {"name": "g", "source": "image_folder", "path": str(tmp_path / "imgs"),
          "conditional": True}
    msg = _error(minimal_config(data={"datasets": [ds]}), tmp_path)
    assert msg.startswith("data.datasets[0].conditional:")
    ds["class_subfolders"] = True
    assert _load(minimal_config(data={"datasets": [ds]}), tmp_path).data.datasets[0].conditional


def test_eval_spaces_primary_defaults_to_the_first_and_names_metrics(tmp_path: Path):
    raw = minimal_config(eval={"embedders": ["classifier", "pixels"], "metrics": ["fd"],
                               "classifier": {"steps": 5}})
    ev = _load(raw, tmp_path).eval
    assert ev.embedders == ("classifier", "pixels") and ev.primary == "classifier"
    assert ev.classifier.steps == 5 and ev.classifier.batch_size == 128   # recipe defaults
    from orchestrator.training.evaluate import metric_name, space_short

    names = [metric_name(k, space_short(e)) for e in ("classifier", "effnet_lite0", "inception")
             for k in ("fd", "precision", "mem_nn_mean")]
    assert names == ["fd_cls", "precision_cls", "mem_nn_mean_cls", "fd_effnet", "precision_effnet",
                     "mem_nn_mean_effnet", "fid", "precision_fid", "mem_nn_mean_fid"]


def test_classifier_space_needs_labelled_datasets(tmp_path: Path):
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):   # 2 classes x 10 images: labelled only with class_subfolders
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = {"name": "g", "source": "image_folder", "path": str(tmp_path / "imgs")}
    raw = minimal_config(data={"datasets": [ds]}, eval={"embedders": ["pixels", "classifier"]},
                         pruning={"methods": [{"name": "random"}]})
    assert _error(raw, tmp_path).startswith("eval.embedders: 'classifier' needs labelled training "
                                            "images, dataset 'g'")
    ds["class_subfolders"] = True
    assert _load(raw, tmp_path).eval.primary == "pixels"


def test_circular_selections_are_the_methods_selecting_in_an_eval_space(tmp_path: Path):
    from orchestrator.config.checks import circular_selections, circularity_warnings

    raw = minimal_config(eval={"embedders": ["pixels"]})
    cfg = _load(raw, tmp_path)
    assert circular_selections(cfg) == [("clustering", "pixels")]
    assert circularity_warnings(cfg) == [
        "warning: method clustering selects in evaluation space pixels: its metrics in that "
        "space are rewarded by construction; it is eval.primary, so its verdict rows are marked"]
    raw = minimal_config(eval={"embedders": ["classifier", "effnet_lite0"]})
    assert circular_selections(_load(raw, tmp_path)) == []     # clustering selects in pixels


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: {name: x\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="^data: required section"):
        config_from_dict({"experiment": {"name": "x"}})


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path):
    base = minimal_config(pruning={"ratios": [0.5], "baseline": True,
                                   "methods": [{"name": "random"}]})
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text(
        "extends: ../base.yaml\nexperiment: {name: child}\npruning: {ratios: [0.25, 0.75]}\n")
    cfg = load_config(sub / "child.yaml", base_dir=tmp_path)
    plain = load_config(tmp_path / "base.yaml", base_dir=tmp_path)
    assert cfg.experiment.name == "child" and plain.experiment.name == base["experiment"]["name"]
    assert cfg.experiment.seeds == plain.experiment.seeds         # untouched keys inherited
    assert cfg.pruning.ratios == (0.25, 0.75)                     # lists replace
    assert [m.name for m in cfg.pruning.methods] == ["random"]    # sibling keys kept
    assert cfg.data == plain.data


def test_extends_errors(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends: cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"c.yaml: extends: file not found"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [1]\n")
    with pytest.raises(ConfigError, match="extends: expected the path"):
        load_config(tmp_path / "d.yaml")


def test_proxy_noise_is_loaded_checked_and_in_the_proxy_cache_key(tmp_path: Path):
    from orchestrator.stages.proxy import ensure_proxy_stats
    from orchestrator.storage.cache import ArtifactCache
    from pruning.stats import NOISE_MODES

    class _CachedEverything:   # records the proxy key; reports it cached (no Ray work)
        key = staticmethod(ArtifactCache.key)

        def has(self, key, kind):
            return True

    keys = {}
    for mode in NOISE_MODES:   # the checks accept exactly pruning.stats' modes
        raw = minimal_config(proxy={"noise": mode})
        raw["pruning"]["methods"] = [{"name": "el2n"}]
        cfg = _load(raw, tmp_path)
        assert cfg.proxy.noise == mode
        keys[mode] = ensure_proxy_stats(_CachedEverything(), cfg, cfg.data.datasets[0],
                                        "latents/x", 10, None, False, seed=0)
    assert keys["per_sample"] != keys["shared"]   # what is computed changes -> another key
