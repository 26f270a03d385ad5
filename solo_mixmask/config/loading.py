"""Composing configs the solo-learn way: ``--config-path DIR --config-name NAME key=value ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError


def select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """The value at a dotted key; ``default`` when it is absent, ``null`` or ``???``."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    return default if value is None else value


def load_config(config_path: Optional[str], config_name: str,
                overrides: Sequence[str] = ()) -> DictConfig:
    """Composes a config with Hydra (defaults lists, config groups, overrides) and unlocks it.

    ``config_path`` may be ``None`` when ``config_name`` is a path to a YAML file.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    name = str(config_name)
    if config_path is None:
        path = Path(name)
        config_path, name = str(path.parent), path.name
    directory = Path(config_path).expanduser().resolve()
    if not directory.is_dir():
        raise ConfigError(f"config directory not found: {config_path}")
    stem = name[:-5] if name.endswith(".yaml") else name
    if not (directory / f"{stem}.yaml").is_file():
        raise ConfigError(f"config file not found: {directory / (stem + '.yaml')}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.2"):
            cfg = compose(config_name=stem, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"cannot compose config {stem!r}: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, False)
    if "hydra" in cfg:
        del cfg["hydra"]
    return cfg
