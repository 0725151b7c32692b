"""A Ray worker ends quietly when SIGTERM lands in a weakref callback
(``orchestrator.runtime.worker_setup``, Ray's worker set-up hook).

The raylet sends a finished trial's actor (and a Train run's workers) SIGTERM when their
placement group is removed. Ray's worker handler raises ``SystemExit``; landing inside a
weakref callback, that exception is swallowed and printed as a traceback into the sweep's
log (one CI run of the S3 smoke test failed its readable-log check on it). The child-process
test shows both: Ray's handler alone in that spot, and with our hook. That every worker of
a run started by ``init_ray`` has the hook is checked by
``tests/test_pipeline_units.py::test_a_local_instance_gets_a_private_address_file``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from orchestrator.runtime import worker_setup
from tests.pipeline_helpers import REPO, child_env

# A child process that gets SIGTERM while its main thread runs a weakref callback.
CHILD = """
import os, signal, sys, weakref
from ray._raylet import raise_sys_exit_with_custom_error_message

def handler(signum, frame):   # what Ray's worker main loop installs (ray 2.60)
    raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.", exit_code=1)

signal.signal(signal.SIGTERM, handler)
if sys.argv[1] == "hook":
    from orchestrator.runtime.worker_setup import setup_worker
    setup_worker()

class Held:
    pass

def on_collect(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100000):   # the handler runs at a bytecode boundary in here
        pass

print("before", flush=True)
held = Held()
ref = weakref.ref(held, on_collect)
del held
print("went on after the signal", flush=True)
"""


def run_child(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.ray
def test_sigterm_in_a_weakref_callback_prints_no_traceback():
    ray_only = run_child("ray")
    # the failure this guards against: a swallowed SystemExit, printed, and the process goes on
    assert "Exception ignored" in ray_only.stderr and "SystemExit" in ray_only.stderr, ray_only
    assert "went on after the signal" in ray_only.stdout and ray_only.returncode == 0
    hooked = run_child("hook")
    assert hooked.returncode == 1, hooked
    assert hooked.stdout == "before\n" and hooked.stderr == "", hooked


def test_other_unraisable_exceptions_are_printed_as_usual(monkeypatch):
    class Breaks:
        def __del__(self):
            raise ValueError("in a __del__")

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "unraisablehook", worker_setup.exit_on_swallowed_exit)
    obj = Breaks()
    del obj                        # the process goes on (os._exit would end pytest here)
    assert "ValueError: in a __del__" in err.getvalue()


def test_the_hook_yields_to_a_submitted_jobs_own():
    assert worker_setup.setup_hook({}) == {"worker_process_setup_hook": worker_setup.SETUP_HOOK}
    assert (worker_setup.setup_hook({"env_vars": {"A": "1"}})
            == {"worker_process_setup_hook": worker_setup.SETUP_HOOK})
    assert worker_setup.setup_hook({"worker_process_setup_hook": "their.hook"}) == {}
    assert worker_setup.setup_hook(
        {"env_vars": {"__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR": "their.hook"}}) == {}


def test_the_jobs_runtime_env_is_read_from_rays_variable(monkeypatch):
    from orchestrator.runtime.workarounds import job_runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_runtime_env() == {}
    job = {"runtime_env": {"worker_process_setup_hook": "their.hook"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert job_runtime_env() == job["runtime_env"]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert job_runtime_env() == {}
