"""Typed configuration: frozen dataclasses from conf/*.yaml + `key=value` overrides."""

from captionrec.config.load import conf_dir, load_config
from captionrec.config.loader import ConfigError, flatten, to_plain
from captionrec.config.schema import Config

__all__ = ["Config", "ConfigError", "conf_dir", "flatten", "load_config", "to_plain"]
