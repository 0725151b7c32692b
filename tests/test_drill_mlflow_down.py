"""Drill: the remote MLflow tracking server is down.

Chosen behaviour: a preflight check before any work (``tracking/server.py:
check_tracking_server``, 5 s timeout): one line naming the URI, exit 1, no Ray
started, nothing written, the output lock released. (A server that dies mid-sweep
loses nothing either: results stay in the cache and the next run's report logs
every trial not logged yet; that path is the report stage's own test.)

Fast, no Ray: about 5 s per CLI run on a quiet machine (~60 s at load average 50).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from conftest import REPO, minimal_config
from orchestrator.errors import TrackingUnavailable
from orchestrator.tracking import check_tracking_server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]        # closed again when the socket goes


@pytest.mark.e2e
def test_server_down_is_one_line_before_any_work(tmp_path: Path, write_config):
    uri = f"http://127.0.0.1:{_closed_port()}"
    raw = minimal_config()
    raw["experiment"]["output_dir"] = str(tmp_path / "out")
    raw["mlflow"] = {"tracking_uri": uri}
    cfg = write_config(raw)
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "orchestrator.run", str(cfg)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    assert p.returncode == 1, p.stderr[-3000:]
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(f"error: mlflow.tracking_uri: {uri} does not answer ("), p.stderr
    assert "nothing was run" in p.stderr
    assert p.stdout == "", p.stdout           # not one stage's progress line
    assert took < 120, took
    # nothing but the (empty) output folder the lock was taken in; the lock is released
    assert [x.name for x in (tmp_path / "out").iterdir()] == []


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [200, 404, 403])
def test_a_server_that_answers_passes(status):
    handler = type("H", (_Answer,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_tracking_server(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_server_times_out(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)                       # accepts the connection, never answers
    try:
        t0 = time.time()
        with pytest.raises(TrackingUnavailable, match="does not answer"):
            check_tracking_server(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=1)
        assert time.time() - t0 < 30
    finally:
        listener.close()


@pytest.mark.parametrize("uri", ["/tmp/mlruns", "file:///tmp/mlruns", "sqlite:///x.db"])
def test_local_stores_are_not_checked(uri):
    check_tracking_server(uri)               # no network, no error
