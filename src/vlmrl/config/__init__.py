"""Typed run configuration loaded from YAML with dotted overrides."""

from vlmrl.config.load import ConfigError, config_to_dict, load_config, save_config
from vlmrl.config.schema import TrainConfig

__all__ = ["ConfigError", "TrainConfig", "config_to_dict", "load_config", "save_config"]
