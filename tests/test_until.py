"""``--until STAGE``: which stages run, which are skipped, what the stages see, the CLI."""

from __future__ import annotations

import sys

import pytest

from conftest import minimal_config
from orchestrator import run
from orchestrator.config import config_from_dict
from orchestrator.config.plan import TrialPlan
from orchestrator.until import (UNTIL, format_plan, reaches, scoring_only, stage_config,
                                stage_plan)

CLUSTERING = {"name": "clustering", "embedder": "pixels", "k": 5}


def _cfg(*methods, **sections):
    sections.setdefault("pruning", {"ratios": [0.5], "methods": list(methods)})
    return config_from_dict(minimal_config(**sections))


def _runs(cfg, until):
    return {s.stage: s.run for s in stage_plan(cfg, until)}


def test_until_select_with_clustering_skips_the_proxy_and_the_evaluation():
    cfg = _cfg({"name": "random"}, CLUSTERING)
    assert _runs(cfg, "select") == {"encode": True, "embed": True, "proxy": False,
                                    "score": True, "select": True, "export": True,
                                    "sweep": False, "report": False}
    why = {s.stage: s.why for s in stage_plan(cfg, "select")}
    assert why["proxy"] == "no configured method needs proxy statistics"
    assert why["sweep"] == why["report"] == "--until select"
    assert "held-out reference skipped" in why["embed"]


def test_a_method_needing_statistics_runs_the_proxy():
    cfg = _cfg({"name": "el2n"})
    steps = {s.stage: s for s in stage_plan(cfg, "select")}
    assert steps["proxy"].run and "loss_last" in steps["proxy"].why
    assert not steps["embed"].run   # el2n selects in no embedding
    assert not _runs(cfg, "embed")["proxy"]   # --until embed stops before it


@pytest.mark.parametrize("until", UNTIL)
def test_each_until_runs_a_prefix_of_the_stages(until):
    cfg = _cfg({"name": "el2n"}, CLUSTERING)
    runs = _runs(cfg, until)
    order = ["encode", "embed", "proxy", "score", "select", "sweep", "report"]
    assert [runs[s] for s in order] == [i <= order.index(until) for i in range(len(order))]
    assert runs["export"] == reaches(until, "select")


def test_the_full_run_is_the_default_and_evaluates():
    cfg = _cfg({"name": "random"}, CLUSTERING)
    assert [st for st, ran in _runs(cfg, "report").items() if not ran] == ["proxy"]
    assert stage_config(cfg, "report") is cfg and stage_config(cfg, "sweep") is cfg
    assert "evaluation spaces: pixels" in {s.stage: s.why for s in stage_plan(cfg)}["embed"]


def test_stage_config_keeps_only_the_methods_embedders():
    cfg = _cfg({"name": "random"}, CLUSTERING,
               embed={"embedders": ["pixels", "classifier"]},
               eval={"embedders": ["classifier", "pixels"], "metrics": ["fd"]})
    sel = stage_config(cfg, "select")
    assert sel.embed.embedders == ("pixels",) and sel.eval.embedders == ()
    assert sel.eval.classifier == cfg.eval.classifier and sel.data == cfg.data
    assert stage_config(cfg, "encode").embed.embedders == ()
    from orchestrator.stages.embed import needed_embedders

    assert needed_embedders(sel) == ["pixels"]   # no classifier to train, no weights to check
    assert needed_embedders(cfg) == ["pixels", "classifier"]


def test_scoring_only_selects_nothing():
    cfg = scoring_only(_cfg({"name": "random"}))
    assert cfg.pruning.ratios == () and cfg.pruning.baseline is False
    assert list(TrialPlan.from_config(cfg)) == []


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="--until: expected one of encode, embed"):
        stage_plan(_cfg({"name": "random"}), "train")


def test_dry_run_shows_the_plan_without_ray(write_config, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    path = write_config(minimal_config())
    assert run.main([str(path), "--dry-run", "--until", "select"]) == 0
    assert "ray" not in sys.modules
    out = capsys.readouterr().out
    plan = out.split("stages (--until select):\n")[1].split("\n---\n")[0].splitlines()
    assert [ln.split()[:2] for ln in plan] == [
        ["encode", "run"], ["embed", "run"], ["proxy", "skip"], ["score", "run"],
        ["select", "run"], ["export", "run"], ["sweep", "skip"], ["report", "skip"]]
    assert out.rstrip().endswith("3 trials")
    assert format_plan(config_from_dict(minimal_config()), "select") in out


def test_until_reaches_the_pipeline_and_bad_stages_exit_2(write_config, monkeypatch, capsys):
    import types

    seen = {}
    fake = types.ModuleType("orchestrator.pipeline")
    fake.run_pipeline = lambda cfg, fresh, until: seen.setdefault("until", until) and 0
    monkeypatch.setitem(sys.modules, "orchestrator.pipeline", fake)
    path = str(write_config(minimal_config()))
    assert run.main([path, "--until", "select"]) == 0 and seen["until"] == "select"
    with pytest.raises(SystemExit) as e:
        run.main([path, "--until", "train"])
    assert e.value.code == 2
    assert "invalid choice: 'train'" in capsys.readouterr().err


def test_latents_only_when_something_needs_them():
    """Random and clustering --until select: the samples table alone (no VQ-VAE); a stats
    method, --until encode or a sweep need the latents."""
    from orchestrator.until import needs_latents

    cfg = config_from_dict(minimal_config())                       # random + clustering
    assert not needs_latents(cfg, "select") and not needs_latents(cfg, "score")
    assert needs_latents(cfg, "encode") and needs_latents(cfg, "sweep")
    stats = config_from_dict(minimal_config(pruning={"ratios": [0.5], "methods": [
        {"name": "el2n"}]}))
    assert needs_latents(stats, "select") and not needs_latents(stats, "embed")
    assert "no VQ-VAE" in format_plan(cfg, "select")
    assert "VQ-VAE latents" in format_plan(stats, "select")
