"""The package version and the code's git commit: the provenance every MLflow run carries.

``__version__`` is the version of the code that runs. In a source checkout (the repository's
``setup.cfg`` beside this package, an editable install included) it is read from that
``setup.cfg``: an editable install's metadata keeps the version of its last ``pip install``,
which goes stale when the checkout moves on. Elsewhere (a wheel) it is
``importlib.metadata.version("prunediff")``; ``0+unknown`` when neither is found.

:func:`git_commit` reads ``HEAD`` from the checkout's ``.git`` folder without needing
``git`` (plain refs, packed refs, worktrees), then falls back to ``git rev-parse HEAD``;
None outside a checkout. Neither ever raises: provenance must not fail a run.
"""

from __future__ import annotations

import configparser
import functools
import importlib.metadata
import re
import subprocess
from pathlib import Path

DIST_NAME = "prunediff"
UNKNOWN = "0+unknown"
ROOT = Path(__file__).resolve().parents[1]   # the checkout (or site-packages when installed)
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def checkout_version(root: Path = ROOT) -> str | None:
    """``[metadata] version`` of ``root/setup.cfg`` when it is prunediff's, else None."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        if not parser.read(root / "setup.cfg", encoding="utf-8"):
            return None
        if parser.get("metadata", "name", fallback=None) != DIST_NAME:
            return None
        return parser.get("metadata", "version", fallback=None)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None


def package_version() -> str:
    """The running code's version (see the module docstring for the order)."""
    found = checkout_version()
    if found:
        return found
    try:
        return importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


__version__ = package_version()


def _git_dir(root: Path) -> Path | None:
    """``root/.git`` as a folder; a worktree's ``.git`` file (``gitdir: ...``) followed."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        text = dot.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:"):].strip())
            return target if target.is_absolute() else (root / target).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    """The sha of ``ref`` (e.g. ``refs/heads/main``): loose ref file, then packed-refs.

    A worktree keeps branch refs in the common dir (named by its ``commondir`` file).
    """
    dirs = [git_dir]
    common = git_dir / "commondir"
    if common.is_file():
        dirs.append((git_dir / common.read_text(encoding="utf-8").strip()).resolve())
    for d in dirs:
        loose = d / ref
        if loose.is_file():
            sha = loose.read_text(encoding="utf-8").strip()
            return sha if _SHA.match(sha) else None
    for d in dirs:
        packed = d / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref and _SHA.match(parts[0]):
                    return parts[0]
    return None


def read_head(root: Path) -> str | None:
    """The commit ``HEAD`` points to, read from the files under ``root/.git``; None if
    ``root`` is not a checkout or the files are not readable."""
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref:"):
            return _resolve_ref(git_dir, head[len("ref:"):].strip())
        return head if _SHA.match(head) else None   # a detached HEAD
    except (OSError, UnicodeDecodeError):
        return None


def _git_rev_parse(root: Path) -> str | None:
    """``git rev-parse HEAD`` in ``root``; None without git, outside a checkout or on error."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and _SHA.match(sha) else None


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = ROOT) -> str | None:
    """The checkout's commit (40 hex digits), or None outside prunediff's git checkout.

    Only a ``root`` holding prunediff's ``setup.cfg`` is asked: an installed package sits in
    ``site-packages``, maybe inside someone else's repository, whose commit is not ours.
    Never raises.
    """
    if checkout_version(root) is None:
        return None
    return read_head(root) or _git_rev_parse(root)


def provenance_tags(config_hash: str) -> dict[str, str]:
    """The MLflow tags every prunediff run carries: version, git commit (when in a checkout)
    and the config hash (``Config.config_hash()``)."""
    tags = {"prunediff.version": __version__, "prunediff.config_hash": config_hash}
    commit = git_commit()
    if commit:
        tags["prunediff.git_commit"] = commit
    return tags


def version_line() -> str:
    """``prunediff 0.2.0 (git 1a2b3c4d5e6f)``; no commit outside a checkout."""
    commit = git_commit()
    return f"{DIST_NAME} {__version__}" + (f" (git {commit[:12]})" if commit else "")
