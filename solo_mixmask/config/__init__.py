"""Configuration: solo-learn's schema, Hydra composition, defaults and validation."""

from .loading import load_config, select

__all__ = ["load_config", "select"]
