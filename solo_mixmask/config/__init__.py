"""Configuration: solo-learn's schema, Hydra composition, defaults and validation."""

from .loading import load_config, select
from .pretrain import parse_pretrain_cfg, world_size

__all__ = ["load_config", "parse_pretrain_cfg", "select", "world_size"]
