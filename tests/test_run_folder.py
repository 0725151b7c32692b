"""FolderRuntime (orchestrator/training/run_folder.py): a trial in this process, no Ray,
checkpoints in its run folder; a cut run resumes from there bit-identical."""

from __future__ import annotations

from orchestrator.training.run_folder import FolderRuntime
from tests.test_tune_resume import cut_and_resume


def test_cut_trial_resumes_from_its_run_folder_bit_identical(tmp_path, one_torch_thread):
    runtime, got = cut_and_resume(tmp_path, FolderRuntime)
    assert got.node_id is None
    assert {15, 20} <= {int(r["step"]) for r in runtime.reported if "step" in r}
