"""Versions and provenance (orchestrator/version.py) and the ``prunediff`` console command
(orchestrator/cli.py): the version, the git commit read without git, the entry point, and
``prunediff CONFIG`` behaving exactly as ``python -m orchestrator.run CONFIG``."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, minimal_config
from orchestrator import cli, run
from orchestrator.version import (__version__, checkout_version, git_commit, provenance_tags,
                                  read_head)

SHA_A, SHA_B = "a" * 40, "b" * 40


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "setup.cfg")
    return parser


def test_version_is_the_checkouts_setup_cfg_version():
    assert __version__ == _setup_cfg()["metadata"]["version"]
    assert checkout_version(REPO) == __version__
    import orchestrator

    assert orchestrator.__version__ == __version__


def test_changelog_has_a_section_for_this_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in text


def test_console_script_points_at_the_cli():
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    name, target = (x.strip() for x in scripts.strip().split("="))
    module, func = target.split(":")
    assert name == "prunediff" and (module, func) == ("orchestrator.cli", "console")
    assert callable(getattr(cli, func))


def _git_dir(root: Path, head: str) -> Path:
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text(head)
    return root / ".git"


def test_read_head_loose_packed_detached_and_worktree(tmp_path):
    loose = tmp_path / "loose"
    git = _git_dir(loose, "ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA_A + "\n")
    assert read_head(loose) == SHA_A

    packed = tmp_path / "packed"
    git = _git_dir(packed, "ref: refs/heads/dev\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{SHA_B} refs/heads/dev\n")
    assert read_head(packed) == SHA_B

    detached = tmp_path / "detached"
    _git_dir(detached, SHA_A + "\n")
    assert read_head(detached) == SHA_A

    # a worktree: .git is a file naming its git dir; branch refs live in the common dir
    common = _git_dir(tmp_path / "main", "ref: refs/heads/main\n")
    (common / "refs" / "heads" / "wt").write_text(SHA_B + "\n")
    wt_git = common / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/wt\n")
    (wt_git / "commondir").write_text("../..\n")
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {wt_git}\n")
    assert read_head(wt) == SHA_B

    assert read_head(tmp_path / "nothing") is None
    broken = tmp_path / "broken"
    _git_dir(broken, "ref: refs/heads/gone\n")
    assert read_head(broken) is None


def test_git_commit_only_inside_prunediffs_checkout(tmp_path):
    other = tmp_path / "someone-elses-repo"
    (_git_dir(other, SHA_A + "\n"))
    assert git_commit(other) is None          # no prunediff setup.cfg: not our commit
    (other / "setup.cfg").write_text("[metadata]\nname = prunediff\nversion = 9.9.9\n")
    git_commit.cache_clear()
    assert git_commit(other) == SHA_A


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a git checkout")
def test_git_commit_matches_git_rev_parse():
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert git_commit() == expected
    tags = provenance_tags("h")
    assert tags == {"prunediff.version": __version__, "prunediff.config_hash": "h",
                    "prunediff.git_commit": expected}


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"prunediff {__version__}")


def test_prunediff_config_is_the_run_cli(tmp_path, write_config, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(write_config(minimal_config()))
    assert run.main([path, "--dry-run"]) == 0
    expected = capsys.readouterr()
    assert cli.main([path, "--dry-run"]) == 0
    got = capsys.readouterr()
    assert (got.out, got.err) == (expected.out, expected.err)
    # the same exit code and one-line error for a user mistake
    assert cli.main([str(tmp_path / "missing.yaml")]) == run.main([str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == err[1] and err[0].startswith("error: ")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: prunediff ")


def test_prunediff_compare_is_the_compare_command(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'a'}: no results")
