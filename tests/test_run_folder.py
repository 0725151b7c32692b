"""FolderRuntime (orchestrator/training/run_folder.py): a trial in this process, no Ray,
checkpoints in its run folder; a cut run resumes from there bit-identical."""

from __future__ import annotations

import pytest
import torch

from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.loop import LocalRuntime
from orchestrator.training.records import TrialResult
from orchestrator.training.run_folder import FolderRuntime, run_checkpoints
from orchestrator.training.trial import run_trial
from tests.test_tune_resume import FAIL_AT, _Cut, _spec


def test_cut_trial_resumes_from_its_run_folder_bit_identical(tmp_path, one_torch_thread):
    ref_spec, spec = _spec(str(tmp_path / "ref")), _spec(str(tmp_path / "cut"))
    torch.manual_seed(0)
    reference = run_trial(ref_spec, LocalRuntime())
    run_dir = str(tmp_path / "trials" / spec.run_name)

    class Cut(FolderRuntime):
        def save_checkpoint(self, metrics, files):
            super().save_checkpoint(metrics, files)
            if files and metrics["step"] == FAIL_AT:
                raise _Cut

    torch.manual_seed(0)
    with pytest.raises(_Cut):
        run_trial(spec, Cut(run_dir, device="cpu"))
    assert [int(p.rsplit("_", 1)[1]) for p in run_checkpoints(run_dir)] == [5, 10]
    torch.manual_seed(123)   # the resumed run takes nothing from the global generator
    runtime = FolderRuntime(run_dir, device="cpu")
    run_trial(spec, runtime)
    got = TrialResult.from_json(ArtifactCache(spec.cache_root).load_json(spec.key))
    assert got.resumed_from_step == FAIL_AT and reference.resumed_from_step == 0
    assert got.loss_curve == reference.loss_curve
    assert got.metrics == reference.metrics
    assert got.node_id is None
    assert [int(p.rsplit("_", 1)[1]) for p in run_checkpoints(run_dir)] == [15, 20]
    assert {15, 20} <= {int(r["step"]) for r in runtime.reported if "step" in r}
