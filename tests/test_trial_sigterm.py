"""A Tune trial's actor leaves quietly on SIGTERM (``runtime.workarounds.quiet_sigterm``).

The raylet sends a finished trial's actor SIGTERM when Tune removes its placement group.
Ray's worker handler raises ``SystemExit``; landing inside a weakref callback, that
exception is swallowed and printed as a traceback into the sweep's log (one CI run of
the S3 smoke test failed its readable-log check on it). The child-process test below
shows both: Ray's own handler in that spot, and ours. That Tune really installs ours in a
trial's actor is checked by ``tests/test_tune_resume.py`` (its trial records the handler).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from orchestrator.runtime import workarounds
from orchestrator.runtime.trials import solo_trial, tune_trial
from tests.pipeline_helpers import REPO, child_env

# A child process that gets SIGTERM while its main thread runs a weakref callback.
CHILD = """
import os, signal, sys, weakref
if sys.argv[1] == "ray":
    from ray._raylet import raise_sys_exit_with_custom_error_message

    def handler(signum, frame):   # what Ray's worker main loop installs (ray 2.60)
        raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.",
                                                 exit_code=1)
else:
    from orchestrator.runtime.workarounds import exit_on_sigterm as handler
signal.signal(signal.SIGTERM, handler)

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


def run_child(handler: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, handler], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.ray
def test_sigterm_in_a_weakref_callback_prints_no_traceback():
    ray_way = run_child("ray")
    # the failure this guards against: a swallowed SystemExit, printed, and the process goes on
    assert "Exception ignored" in ray_way.stderr and "SystemExit" in ray_way.stderr, ray_way
    assert "went on after the signal" in ray_way.stdout
    ours = run_child("ours")
    assert ours.returncode == 1, ours
    assert ours.stdout == "before\n" and ours.stderr == "", ours


def test_the_mixin_installs_the_handler_in_the_main_thread_only():
    class Base:
        def setup(self, config):
            self.config = config

    class Trainable(workarounds.QuietSigterm, Base):
        pass

    before = signal.getsignal(signal.SIGTERM)
    try:
        seen = {}
        other = threading.Thread(target=lambda: seen.update(t=Trainable()) or seen["t"].setup(1))
        other.start()
        other.join()
        assert seen["t"].config == 1 and signal.getsignal(signal.SIGTERM) is before
        trainable = Trainable()
        trainable.setup({"a": 1})
        assert trainable.config == {"a": 1}
        assert signal.getsignal(signal.SIGTERM) is workarounds.exit_on_sigterm
    finally:
        signal.signal(signal.SIGTERM, before)


def test_both_sweep_trainables_carry_the_mixin():
    from ray.tune.trainable.function_trainable import wrap_function

    for fn in (solo_trial, tune_trial):
        assert issubclass(wrap_function(fn), workarounds.QuietSigterm), fn.__name__
