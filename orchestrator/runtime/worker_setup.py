"""Set-up of every Ray worker process of a run: Ray's ``worker_process_setup_hook``.

:func:`orchestrator.runtime.cluster.init_ray` names :func:`setup_worker` in the job's
runtime_env (:func:`setup_hook`); Ray imports this module and calls it at the start of each
worker process, before the worker takes tasks. It imports no Ray and nothing heavy (it costs
every worker start), and is one of the Ray workarounds listed in
:mod:`orchestrator.runtime.workarounds` (number 6).

Why: the raylet ends a worker with SIGTERM (then SIGKILL 200 ms later) when the placement
group it ran in is removed: at the end of every Tune trial, for the trial's actor, and for a
Ray Train run's controller and workers ("DisconnectClient: sending SIGTERM to pgid" in
raylet.out, Ray 2.60). Ray's worker handler raises ``SystemExit``. When the signal lands
while the main thread runs a weakref callback or a ``__del__``, Python cannot raise it
there: it prints "Exception ignored in ... Traceback ... SystemExit: 1" and carries on. That
traceback reached the sweep's log after a trial that had succeeded (one CI run of the S3
smoke test, whose readable-log check failed on it). :func:`exit_on_swallowed_exit` ends the
process instead, as the ``SystemExit`` meant to, with its exit code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Ray imports this module by name in each worker (``runtime_env["worker_process_setup_hook"]``).
SETUP_HOOK = "orchestrator.runtime.worker_setup.setup_worker"


def exit_on_swallowed_exit(unraisable: Any) -> None:
    """``sys.unraisablehook``: an exception Python could not raise, e.g. in a weakref callback.

    A ``SystemExit`` (Ray's SIGTERM handler) ends the process now: stdout and stderr
    flushed, then ``os._exit`` with the exit's code (1 when it has none or a non-integer
    one); nothing is left to save, the raylet would SIGKILL the worker 200 ms later. Any
    other exception goes to Python's default hook (printed as usual).

    Args:
        unraisable: ``sys.UnraisableHookArgs`` (``exc_type``, ``exc_value``, ...).
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        code = getattr(unraisable.exc_value, "code", 1)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):   # closed or gone
                pass
        os._exit(code if isinstance(code, int) else 1)
    sys.__unraisablehook__(unraisable)


def setup_worker() -> None:
    """Ray's worker set-up hook: install :func:`exit_on_swallowed_exit`."""
    sys.unraisablehook = exit_on_swallowed_exit


def setup_hook(job_runtime_env: dict) -> dict[str, str]:
    """``{"worker_process_setup_hook": SETUP_HOOK}`` for ``ray.init(runtime_env=...)``, or
    nothing when the submitted job's runtime_env (``job_runtime_env``) has a hook of its own
    (Ray raises on two different hooks; the job's wins)."""
    env_vars = job_runtime_env.get("env_vars") or {}
    # the variable is Ray's ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR (a hook already
    # exported); spelled out here, since this module imports no Ray
    if job_runtime_env.get("worker_process_setup_hook") or \
            "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR" in env_vars:
        return {}
    return {"worker_process_setup_hook": SETUP_HOOK}
