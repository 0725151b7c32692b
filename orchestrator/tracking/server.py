"""The tracking server and the experiment: the preflight check, the UI command, opening an
experiment (created on first use, tagged so the UI opens on its runs).

``mlflow`` is imported inside the functions that need it: ``--dry-run`` and the preflight
check run without it (importing mlflow takes seconds).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from orchestrator.errors import TrackingUnavailable
from orchestrator.tracking.view import tag_experiment


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that browses this run's MLflow store."""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1"


def check_tracking_server(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Before any work: an ``http(s)://`` tracking server must answer (any HTTP status).

    A sweep whose server is down would only find out after hours of training; its
    results would stay in the cache (the next run logs them: trials already logged
    are skipped), but failing first is the honest default. File stores, sqlite and
    other schemes are not checked.

    Raises:
        TrackingUnavailable: no HTTP answer within ``timeout_s`` (names the URI).
    """
    if not tracking_uri.lower().startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answers (an auth proxy, an old server without /health)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(
            f"mlflow.tracking_uri: {tracking_uri} does not answer ({reason}); start the "
            f"MLflow server or point mlflow.tracking_uri elsewhere (nothing was run)") from None


def artifact_location_uri(loc: str | None) -> str | None:
    """``mlflow.artifact_location`` as MLflow wants it: a URI (a local path -> ``file://``)."""
    if loc is None or "://" in loc:
        return loc
    return Path(loc).absolute().as_uri()


def tracking_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri`` (also the default URI of ``mlflow.*`` calls)."""
    # every Ray trial worker imports runtime/trials.py, which imports this package
    # (TuneLiveCallback), and needs no mlflow:
    # lazy: mlflow costs ~4 s to import (measured 2026-12-06)
    import mlflow
    from mlflow.tracking import MlflowClient  # lazy: as above

    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def open_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when absent and
    tagged so the UI opens on its runs table (:func:`tracking.view.tag_experiment`)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        exp_id = client.create_experiment(
            name, artifact_location=artifact_location_uri(artifact_location))
    else:
        exp_id = exp.experiment_id
    tag_experiment(client, exp_id)
    return exp_id


def find_run(client: Any, experiment_id: str, tags: dict[str, str],
             extra: str = "") -> Any | None:
    """The newest run of the experiment carrying every tag in ``tags`` (and matching the
    MLflow search clause ``extra``), or None."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ([extra] if extra else [])
    found = client.search_runs([experiment_id], " and ".join(clauses), max_results=1,
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None
