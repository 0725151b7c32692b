"""Screenshot of the MLflow UI on a sweep's experiment, as a user opens it (headless Chromium).

Starts ``mlflow ui`` on 127.0.0.1 with a free port against a tracking store that the
report stage wrote (``orchestrator.tracking.MlflowReporter``), opens the URL the
run prints (``orchestrator.tracking.view.runs_url``) in ``/usr/bin/chromium
--headless``, saves the PNG, and stops the server (its own process group).

    .venv/bin/python -m benchmarks.mlflow_screenshot sqlite:////abs/out/mlflow.db smoke \
        docs/figures/mlflow_runs.png [--plain]

``--plain`` opens the experiment without the shared view (what the tag alone gives).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tracking_uri")
    p.add_argument("experiment")
    p.add_argument("out")
    p.add_argument("--plain", action="store_true")
    p.add_argument("--wait-ms", type=int, default=20000, help="Chromium virtual-time budget")
    a = p.parse_args()
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.view import VIEW_KEY, runs_url

    exp = MlflowClient(a.tracking_uri).get_experiment_by_name(a.experiment)
    if exp is None:
        sys.exit(f"error: no experiment {a.experiment!r} in {a.tracking_uri}")
    port = free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", a.tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 900)
        url = (f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}" if a.plain
               else runs_url(exp.experiment_id, VIEW_KEY, port=port))
        print(f"opening {url}", flush=True)
        subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--virtual-time-budget={a.wait_ms}",
                        f"--screenshot={os.path.abspath(a.out)}", "--window-size=1600,1000", url],
                       check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"wrote {a.out}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)   # the server and its workers, nothing else
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
