"""prunediff orchestrator: config, data sources, artifact cache and the Ray pipeline.

One folder per role (see ARCHITECTURE.md): ``config/``, ``data/``, ``storage/``,
``training/`` (no Ray), ``runtime/`` (all Ray), ``stages/``, ``tracking/`` (all MLflow);
``pipeline.py`` composes the stages, ``run.py`` is the CLI (``prunediff``: ``cli.py``) and
``__version__`` comes from ``version.py``.

This is the only package that imports ``ray`` and ``mlflow``; it imports them lazily
so that ``python -m orchestrator.run CONFIG --dry-run`` validates a config without
starting (or even importing) Ray.
"""

from orchestrator.config import Config, ConfigError, Trial, load_config
from orchestrator.version import __version__

__all__ = ["Config", "ConfigError", "Trial", "__version__", "load_config"]
