"""Test tiers: every test belongs to exactly one, and a unit test that leaves its process fails.

The tiers (markers, declared in setup.cfg):

- ``unit``: no Ray and no child process; the default for a test that names no tier.
- ``e2e``: the program end to end without Ray: the smoke config on the local executor
  (``resources.executor: local``) and the CLI in a child process.
- ``ray``: Ray Data / Train / Tune (a pipeline on the Ray executor), DDP process groups,
  the failure drills.
- ``cluster``: multi-node and autoscaling clusters started by the test (opt-in).

A module declares its tier with ``pytestmark = pytest.mark.ray`` (or a test with the
decorator). ``make test-fast`` runs ``-m unit``; ``make test`` every tier but ``cluster``.

The guard (:func:`guard_unit_test`) runs around every unit test: starting Ray
(``ray.init``), a Python child process (``subprocess`` with ``sys.executable`` or
``python``) or a ``multiprocessing`` process (DDP's workers, torch.multiprocessing.spawn)
raises :class:`WrongTier` naming the tier the test belongs in. Around an e2e test,
starting Ray in the test's process raises it too (a child process that starts Ray is not
seen: the tests that run a pipeline on Ray are ``ray`` tests). Other child processes (``git``
for the provenance tags) are allowed: they are fast and start no interpreter.
"""

from __future__ import annotations

import multiprocessing.process
import os
import subprocess
import sys
from typing import Any, Iterator, Sequence

import pytest

TIERS = ("unit", "e2e", "ray", "cluster")


class WrongTier(RuntimeError):
    """A unit test started Ray or a child Python process."""


def tier_of(item: pytest.Item) -> str:
    """The one tier of a collected test (``unit`` when it names none).

    Raises:
        pytest.UsageError: the test names two tiers.
    """
    named = [t for t in TIERS if item.get_closest_marker(t) is not None]
    if len(named) > 1:
        raise pytest.UsageError(f"{item.nodeid}: marked with tiers {', '.join(named)}; "
                                "a test belongs to exactly one")
    return named[0] if named else "unit"


def assign_tiers(items: Sequence[pytest.Item]) -> None:
    """Mark every test that names no tier as ``unit`` (so ``-m unit`` selects it)."""
    for item in items:
        if tier_of(item) == "unit" and item.get_closest_marker("unit") is None:
            item.add_marker(pytest.mark.unit)


def _is_python(args: Any) -> bool:
    """True when a Popen ``args`` (list or shell string) starts a Python interpreter."""
    if isinstance(args, (str, bytes)):
        words = os.fsdecode(args).split()
    else:
        words = [os.fsdecode(a) for a in (args or [])]
    if not words:
        return False
    return words[0] == sys.executable or os.path.basename(words[0]).startswith("python")


def _refuse(what: str, tier: str, nodeid: str, is_tier: str = "unit") -> WrongTier:
    return WrongTier(f"{nodeid} is {'an' if is_tier == 'e2e' else 'a'} {is_tier} test "
                     f"but {what}: mark it pytest.mark.{tier} (tests/tiers.py)")


def _patch_ray_init(monkeypatch: pytest.MonkeyPatch, error: WrongTier) -> None:
    def ray_init(*a: Any, **kw: Any) -> None:
        raise error

    try:   # imported once per session; a test that starts it fails at ray.init
        import ray
    except ImportError:
        return
    monkeypatch.setattr(ray, "init", ray_init)


@pytest.fixture
def guard_unit_test(request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a unit test that starts Ray, a Python child process or a multiprocessing
    process, and an e2e test that starts Ray in its process."""
    tier, nodeid = tier_of(request.node), request.node.nodeid
    if tier == "e2e":
        _patch_ray_init(monkeypatch, _refuse("starts Ray", "ray", nodeid, "e2e"))
        yield
        return
    if tier != "unit":
        yield
        return
    popen_init = subprocess.Popen.__init__

    def popen(self: subprocess.Popen, args: Any, *a: Any, **kw: Any) -> None:
        if _is_python(args):
            raise _refuse(f"starts a Python child process ({args!r:.80})", "e2e", nodeid)
        popen_init(self, args, *a, **kw)

    def process_start(self: Any) -> None:
        raise _refuse("starts a multiprocessing process (DDP, spawn)", "ray", nodeid)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", process_start)
    _patch_ray_init(monkeypatch, _refuse("starts Ray", "ray", nodeid))
    yield
