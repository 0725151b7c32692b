"""Drill: two runs on one ``output_dir`` (``orchestrator/storage/lock.py``).

The second run stops at once with one line naming the holder (host, pid, start
time), exit code 1, and writes nothing; a lock left by a killed run (its pid gone on
this host, or an old heartbeat from another host) is taken over; ``run_pipeline``
holds the lock before any stage and releases it on return, exception and Ctrl-C;
``--dry-run`` takes no lock. All fast (no Ray): about 10 s in all on the loaded
2-core machine, most of it the one CLI subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, minimal_config
from orchestrator import pipeline, run
from orchestrator.config import config_from_dict
from orchestrator.errors import OutputLocked
from orchestrator.storage.lock import LOCK_NAME, LockInfo, RunLock, _pid_start


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(out: Path, **fields) -> LockInfo:
    now = time.time()
    info = LockInfo(**{"host": socket.gethostname(), "pid": os.getpid(),
                       "pid_start": _pid_start(os.getpid()), "started": now - 60,
                       "heartbeat": now, "token": "t" * 32, **fields})
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps(info.__dict__))
    return info


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path: Path):
    first = RunLock(str(tmp_path))
    assert first.acquire() is None
    with pytest.raises(OutputLocked) as e:
        RunLock(str(tmp_path)).acquire()
    msg = str(e.value)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(first.info.started))
    assert f"{socket.gethostname()} pid {os.getpid()}" in msg and when in msg
    assert "\n" not in msg and str(tmp_path) in msg
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(str(tmp_path)):               # free again
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("fields, why", [
    ({"pid": "DEAD"}, "is gone"),                                   # killed run, this host
    ({"pid_start": "1"}, "is gone"),                                # our pid, reused
    ({"host": "elsewhere", "heartbeat": time.time() - 3600}, "no heartbeat"),
])
@pytest.mark.e2e
def test_stale_lock_is_taken_over(fields, why, tmp_path: Path, caplog):
    fields = {k: (_dead_pid() if v == "DEAD" else v) for k, v in fields.items()}
    old = _write_lock(tmp_path, **fields)
    lock = RunLock(str(tmp_path), stale_after_s=300)
    replaced = lock.acquire()
    try:
        assert replaced == old
        assert why in caplog.text and "taking over a stale lock" in caplog.text
        now = json.loads((tmp_path / LOCK_NAME).read_text())
        assert now["token"] == lock.info.token and now["pid"] == os.getpid()
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]  # no leftovers
    finally:
        lock.release()


@pytest.mark.parametrize("fields", [
    {},                                                         # this process: alive
    {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 10},  # recent heartbeat
])
def test_live_lock_is_not_taken_over(fields, tmp_path: Path):
    _write_lock(tmp_path, **fields)
    before = (tmp_path / LOCK_NAME).read_bytes()
    with pytest.raises(OutputLocked, match="is in use by another run"):
        RunLock(str(tmp_path), stale_after_s=300).acquire()
    assert (tmp_path / LOCK_NAME).read_bytes() == before


def test_corrupt_lock_file_is_stale(tmp_path: Path):
    (tmp_path / LOCK_NAME).write_bytes(b'{"host": "a", "pi')   # killed mid-write
    with RunLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.info.token


def test_heartbeat_advances_and_a_lost_lock_is_left_alone(tmp_path: Path):
    lock = RunLock(str(tmp_path), heartbeat_s=0.05)
    lock.acquire()
    t0 = lock.info.heartbeat
    time.sleep(0.5)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"] > t0
    # Taken over right before a beat reads the file (inside the beat, so that no beat is
    # between its read and its write: a takeover there is overwritten, a race the lock
    # avoids by taking over only a lock whose heartbeat is an hour old).
    taken: list = []
    real_read = lock.read

    def read_after_takeover():
        if not taken:
            taken.append(_write_lock(tmp_path, token="x" * 32))
        return real_read()

    lock.read = read_after_takeover
    thread = lock._thread
    thread.join(timeout=10)
    assert taken and not thread.is_alive()                       # the heartbeat stopped
    lock.release()                                               # must not delete theirs
    assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == taken[0].token


def test_racing_acquirers_exactly_one_wins(tmp_path: Path):
    won, lost = [], []
    gate = threading.Barrier(6)

    def race():
        lock = RunLock(str(tmp_path))
        gate.wait()
        try:
            lock.acquire()
            won.append(lock)
        except OutputLocked:
            lost.append(1)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    won[0].release()


def _cfg(tmp_path: Path):
    raw = minimal_config()
    raw["experiment"]["output_dir"] = str(tmp_path / "out")
    return config_from_dict(raw, check=False)


def test_run_pipeline_holds_the_lock_and_releases_it(tmp_path: Path, monkeypatch):
    cfg = _cfg(tmp_path)
    lock_file = Path(cfg.experiment.output_dir) / LOCK_NAME
    seen = []

    def stages(cfg, fresh, until):
        seen.append(json.loads(lock_file.read_text())["pid"])
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run_stages", stages)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(cfg)
    assert seen == [os.getpid()] and not lock_file.exists()
    monkeypatch.setattr(pipeline, "_run_stages", lambda cfg, fresh, until: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pipeline.run_pipeline(cfg)
    assert not lock_file.exists()
    monkeypatch.setattr(pipeline, "_run_stages", lambda cfg, fresh, until: lock_file.exists() and 7)
    assert pipeline.run_pipeline(cfg) == 7 and not lock_file.exists()


def test_dry_run_takes_no_lock(tmp_path: Path, write_config, capsys):
    out = tmp_path / "out"
    _write_lock(out)                                             # held by this process
    path = write_config({**minimal_config(), "experiment": {
        "name": "t", "seeds": [0], "output_dir": str(out)}})
    assert run.main([str(path), "--dry-run"]) == 0


@pytest.mark.e2e
def test_second_run_exits_at_once_with_one_line(tmp_path: Path, write_config):
    """A real second CLI run while this process holds the lock: exit 1, one line, no writes."""
    out = tmp_path / "out"
    holder = RunLock(str(out))
    holder.acquire()
    try:
        path = write_config({**minimal_config(), "experiment": {
            "name": "t", "seeds": [0], "output_dir": str(out)}})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "orchestrator.run", str(path)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        took = time.time() - t0
        assert p.returncode == 1, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith(f"error: {out} is in use by another run "
                                   f"({socket.gethostname()} pid {os.getpid()}, started ")
        assert took < 100, took    # no Ray, no stage (62 s seen at load average 58 on 2 cores)
        assert sorted(x.name for x in out.iterdir()) == [LOCK_NAME]   # nothing written
        assert json.loads((out / LOCK_NAME).read_text())["token"] == holder.info.token
    finally:
        holder.release()


def test_lock_on_s3(tmp_path: Path):
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    from tests.s3_helpers import bucket_keys, local_s3

    with local_s3("lock-test") as env:
        uri = "s3://lock-test/runs/a"
        first = RunLock(uri, settle_s=0.1)
        first.acquire()
        assert f"runs/a/{LOCK_NAME}" in bucket_keys(env, "lock-test", "runs/a")
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
            RunLock(uri, settle_s=0.1).acquire()
        first.release()
        assert f"runs/a/{LOCK_NAME}" not in bucket_keys(env, "lock-test", "runs/a")
        # a remote holder whose heartbeat stopped long ago is taken over
        import pyarrow.fs as pafs

        fs, base = pafs.FileSystem.from_uri(uri)
        old = {"host": "elsewhere", "pid": 1, "pid_start": "", "started": 0.0,
               "heartbeat": time.time() - 3600, "token": "o" * 32, "command": ""}
        with fs.open_output_stream(f"{base}/{LOCK_NAME}") as f:
            f.write(json.dumps(old).encode())
        taker = RunLock(uri, settle_s=0.1)
        assert taker.acquire().token == "o" * 32
        taker.release()
