"""How the MLflow UI opens a sweep's experiment: on the runs table, with the comparison's columns.

Read from the UI bundle of MLflow 3.17 (``mlflow/server/js/build/static/js``):

- A new experiment without the ``mlflow.experimentKind`` tag is shown as a GenAI
  experiment (an "Overview" of traces). The tag's value ``custom_model_development``
  (the UI's ``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``, also what its "experiment type"
  selector writes) makes it open on the Runs table.
- The runs table's columns come from the browser's local storage, defaulting to
  Source / Models / Dataset. A *shared view* overrides that: the experiment tag
  ``mlflow.sharedViewState.<key>`` holds the view as JSON (UI state such as
  ``selectedColumns`` plus search facets such as ``searchFilter``), and the URL
  ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens it. The UI ignores the
  key when the URL also carries a search facet, so the filter goes into the JSON.
  Columns are named ``<metrics|params|tags|attributes>.`<name>```.
- Runs nest under their parent run; filtering to the trial runs lists them flat.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "prunediff-trials"
PARAM_COLUMNS = ("dataset", "method", "ratio", "seed", "n_train")
TRIAL_FILTER = "tags.`prunediff.role` = 'trial'"
DEFAULT_PORT = 5000   # `mlflow ui`'s default


def column(kind: str, name: str) -> str:
    """The UI's column id, e.g. ``column("metrics", "fd_pixels") == "metrics.`fd_pixels`"``."""
    return f"{kind}.`{name}`"


def runs_view_state(metrics: Sequence[str], params: Sequence[str] = PARAM_COLUMNS) -> dict[str, Any]:
    """The shared view: trial runs only, the given params then metrics as columns.

    Args:
        metrics: metric names in display order (the comparison table's).
        params: run params to show before them.
    """
    return {"searchFilter": TRIAL_FILTER,
            "selectedColumns": [column("params", p) for p in params]
            + [column("metrics", m) for m in metrics],
            "runsHiddenMode": "SHOW_ALL"}


def tag_experiment(client: Any, experiment_id: str) -> None:
    """Mark the experiment as classic model training, so the UI opens on its runs."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT)


def set_runs_view(client: Any, experiment_id: str, metrics: Sequence[str], key: str = VIEW_KEY) -> str:
    """Store :func:`runs_view_state` as the experiment's shared view ``key``; returns the key."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key,
                              json.dumps(runs_view_state(metrics), separators=(",", ":")))
    return key


def runs_url(experiment_id: str, key: str = VIEW_KEY, host: str = "127.0.0.1",
             port: int = DEFAULT_PORT) -> str:
    """The `mlflow ui` address that opens the shared runs view of an experiment."""
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"
