"""Configuration: typed schema, TOML layers, environment overrides."""

from purplegw.config.loader import Config, load_config

__all__ = ["Config", "load_config"]
