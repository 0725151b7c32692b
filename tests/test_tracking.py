"""orchestrator.tracking: provenance tags on every run, live trial runs opened through the
Tune callback (a fake Tune trial, no Ray cluster) or by the local executor, completed by the
report's reporter into the same run, and a tracking failure that never stops the sweep."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from orchestrator.config.schema import Trial
from orchestrator.tracking import MlflowReporter, SweepReport, log_report
from orchestrator.runtime.trials import TuneLiveCallback
from orchestrator.tracking.live import LiveTrialRuns, live_logger
from orchestrator.training.records import TrialFiles, TrialResult
from orchestrator.version import __version__, git_commit

TRIAL = Trial("fmnist", "random", 0.5, 1)


def _reporter(tmp_path, experiment: str = "live-test") -> MlflowReporter:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowReporter(uri, experiment, str(tmp_path / "artifacts"), "cafe", "sweep")


def _result(curve: list[list[float]]) -> TrialResult:
    return TrialResult(key="trial/k1", trial=TRIAL, params={"n_train": 200},
                       metrics={"fd_pixels": 3.0}, loss_curve=curve, timing={},
                       resumed_from_step=0, world_size=1, finished_at=0.0,
                       files=TrialFiles(grid="", manifest=""))


def _tune_trial(name: str = TRIAL.name, trial_id: str = "abc_00000") -> SimpleNamespace:
    """What the callback reads of a ``ray.tune.experiment.Trial``."""
    return SimpleNamespace(trial_id=trial_id, config={"trial": {"name": name, "spec": "x"}})


def _trial_runs(reporter: MlflowReporter) -> list:
    return reporter.client.search_runs(
        [reporter.experiment_id], f"tags.`mlflow.parentRunId` = '{reporter.parent_id}'")


def test_parent_and_trial_runs_carry_version_commit_and_config_hash(tmp_path):
    reporter = _reporter(tmp_path)
    rid = reporter.log_trial(_result([[5, 1.0]]), {})
    for run_id in (reporter.parent_id, rid):
        tags = reporter.client.get_run(run_id).data.tags
        assert tags["prunediff.version"] == __version__
        assert tags["prunediff.config_hash"] == "cafe"
        if git_commit():
            assert tags["prunediff.git_commit"] == git_commit()


def test_live_run_is_completed_by_the_report_not_duplicated(tmp_path):
    reporter = _reporter(tmp_path)
    spec = SimpleNamespace(run_name=TRIAL.name, key="trial/k1", trial=TRIAL)
    logger = TuneLiveCallback(live_logger(reporter, [spec]))
    trial = _tune_trial()
    logger.on_trial_start(iteration=0, trials=[trial], trial=trial)
    (run,) = _trial_runs(reporter)
    assert run.info.status == "RUNNING"
    assert run.data.tags["prunediff.final"] == "false"
    assert run.data.tags["prunediff.trial_key"] == "trial/k1"
    assert run.data.params == {"dataset": "fmnist", "method": "random", "ratio": "0.5",
                               "seed": "1"}
    for step, loss in ((5, 1.0), (10, 0.8)):
        logger.on_trial_result(iteration=step, trials=[trial], trial=trial,
                               result={"step": step, "loss": loss})
    logger.on_trial_result(iteration=11, trials=[trial], trial=trial, result={"done": 1})
    history = reporter.client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(5, 1.0), (10, 0.8)]
    logger.on_trial_complete(iteration=12, trials=[trial], trial=trial)
    assert reporter.client.get_run(run.info.run_id).info.status == "FINISHED"
    assert reporter.logged_trials() == set()          # the report still has to log it

    rid = reporter.log_trial(_result([[5, 1.0], [10, 0.8], [15, 0.5]]), {})
    assert rid == run.info.run_id and len(_trial_runs(reporter)) == 1
    done = reporter.client.get_run(rid)
    assert done.data.tags["prunediff.final"] == "true" and done.info.status == "FINISHED"
    assert done.data.metrics["fd_pixels"] == 3.0 and done.data.params["n_train"] == "200"
    history = reporter.client.get_metric_history(rid, "train_loss")
    assert sorted(m.step for m in history) == [5, 10, 15]   # no step twice
    assert reporter.logged_trials() == {"trial/k1"}


def test_log_report_logs_each_trial_once_and_the_parent(tmp_path, capsys):
    """The report hands MLflow a SweepReport; a trial already logged is not asked for its
    files again, and the parent gets the params, files and the FAILED/FINISHED status."""
    reporter = _reporter(tmp_path)
    table = tmp_path / "results.csv"
    table.write_text("dataset,method\nfmnist,random\n")
    asked = []

    def files(res: TrialResult) -> dict[str, str]:
        asked.append(res.key)
        grid = tmp_path / "samples.png"
        grid.write_bytes(b"png")
        return {"grid": str(grid)}

    report = SweepReport([_result([[5, 1.0]])], files, {"n_trials": 1}, [str(table)],
                         ["fd_pixels"])
    log_report(reporter, report, failed=True, metrics={"rho_el2n": 0.7})
    (run,) = _trial_runs(reporter)
    assert asked == ["trial/k1"] and run.data.tags["prunediff.final"] == "true"
    assert [a.path for a in reporter.client.list_artifacts(run.info.run_id)] == ["samples.png"]
    parent = reporter.client.get_run(reporter.parent_id)
    assert parent.info.status == "FAILED" and parent.data.params["n_trials"] == "1"
    assert parent.data.metrics["rho_el2n"] == 0.7
    assert [a.path for a in reporter.client.list_artifacts(reporter.parent_id)] == ["results.csv"]
    said = capsys.readouterr()
    assert "MLflow trials table: run `mlflow ui --backend-store-uri" in said.out + said.err

    log_report(reporter, report, failed=False)     # a rerun: the trial is not logged again
    assert asked == ["trial/k1"] and len(_trial_runs(reporter)) == 1
    assert reporter.client.get_run(reporter.parent_id).info.status == "FINISHED"


def test_failed_trial_run_is_failed_then_reopened_by_a_rerun(tmp_path):
    reporter = _reporter(tmp_path)
    spec = SimpleNamespace(run_name=TRIAL.name, key="trial/k1", trial=TRIAL)
    logger = TuneLiveCallback(live_logger(reporter, [spec]))
    trial = _tune_trial()
    logger.on_trial_start(iteration=0, trials=[trial], trial=trial)
    logger.on_trial_error(iteration=1, trials=[trial], trial=trial)
    (run,) = _trial_runs(reporter)
    assert run.info.status == "FAILED"
    again = MlflowReporter(reporter.tracking_uri, "live-test", None, "cafe", "sweep")
    assert again.parent_id == reporter.parent_id            # the same sweep run
    rerun = TuneLiveCallback(live_logger(again, [spec]))
    rerun.on_trial_start(iteration=0, trials=[trial], trial=_tune_trial(trial_id="new_0"))
    (run2,) = _trial_runs(again)
    assert run2.info.run_id == run.info.run_id and run2.info.status == "RUNNING"


def test_logger_pickles_and_ignores_unknown_trials(tmp_path):
    reporter = _reporter(tmp_path)
    logger = TuneLiveCallback(live_logger(reporter, []))
    stranger = _tune_trial(name="not-a-trial-of-this-sweep")
    logger.on_trial_start(iteration=0, trials=[stranger], trial=stranger)
    assert _trial_runs(reporter) == []
    clone = pickle.loads(pickle.dumps(logger))               # Tune pickles its run config
    assert clone.runs.parent_id == reporter.parent_id and clone.runs._client is None


def test_tracking_errors_never_stop_the_sweep(tmp_path, caplog):
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("server gone")

    runs = LiveTrialRuns("sqlite:///unused.db", "0", "p", {}, {
        TRIAL.name: {"key": "k", "trial": [TRIAL.dataset, TRIAL.method, TRIAL.ratio, 1]}})
    runs._client = Broken()
    logger = TuneLiveCallback(runs)
    trial = _tune_trial()
    logger.on_trial_start(iteration=0, trials=[trial], trial=trial)
    logger.on_trial_result(iteration=1, trials=[trial], trial=trial,
                           result={"step": 1, "loss": 1.0})
    logger.on_trial_complete(iteration=2, trials=[trial], trial=trial)
    warnings = [r for r in caplog.records if "live MLflow logging" in r.getMessage()]
    assert len(warnings) == 1 and "server gone" in warnings[0].getMessage()


@pytest.mark.parametrize("role", ["subsets"])
def test_subsets_run_is_tagged(tmp_path, role):
    """The subset export's run carries the same provenance tags (stages/export.py)."""
    from orchestrator.stages.export import log_subsets

    out = tmp_path / "out"
    (out / "subsets").mkdir(parents=True)
    (out / "subsets" / "index.csv").write_text("dataset,method,ratio,seed,n_total,n_kept,file\n")
    cfg = SimpleNamespace(
        mlflow=SimpleNamespace(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                               experiment_name="subsets-test",
                               artifact_location=str(tmp_path / "artifacts")),
        experiment=SimpleNamespace(output_dir=str(out), name="exp"),
        config_hash=lambda: "beef")
    rid = log_subsets(cfg, [])
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri).get_run(rid).data.tags
    assert tags["prunediff.role"] == role and tags["prunediff.config_hash"] == "beef"
    assert tags["prunediff.version"] == __version__
