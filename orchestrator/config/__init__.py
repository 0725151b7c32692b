"""The experiment config: YAML -> frozen dataclasses, validated.

``schema`` holds the dataclasses, ``loader`` reads YAML (``extends``, ``--set``,
types, resolved paths), ``checks`` validates values, registry names and data.
"""

from orchestrator.config.checks import describe_references
from orchestrator.config.loader import config_from_dict, dump_yaml, load_config
from orchestrator.config.schema import (FULL_METHOD, AutoencoderConfig, ClassifierConfig,
                                        Config, DataConfig, DatasetConfig, EmbedConfig, EvalConfig, ExperimentConfig,
                                        MethodConfig, MlflowConfig, ModelConfig, ProxyConfig,
                                        PruningConfig, ResourcesConfig, SampleConfig,
                                        StorageConfig, TrainConfig, Trial, as_mapping)
from orchestrator.errors import ConfigError

__all__ = ["FULL_METHOD", "AutoencoderConfig", "ClassifierConfig", "Config", "ConfigError",
           "DataConfig",           "DatasetConfig", "EmbedConfig", "EvalConfig", "ExperimentConfig", "MethodConfig",
           "MlflowConfig", "ModelConfig", "ProxyConfig", "PruningConfig", "ResourcesConfig",
           "SampleConfig", "StorageConfig", "TrainConfig", "Trial", "as_mapping",
           "config_from_dict", "describe_references", "dump_yaml", "load_config"]
