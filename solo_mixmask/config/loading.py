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


def prepare_overrides(overrides: Sequence[str], directory: Path) -> list[str]:
    """Command-line ``key=value`` items as Hydra should read them.

    A plain ``key=value`` sets the key whether or not the YAML has it (Hydra's ``++``): the schema
    decides which keys exist, and a misspelt one is reported with the closest known key instead of
    Hydra's "use +key" hint. Config groups (a folder beside the config, e.g.
    ``augmentations=asymmetric``) keep Hydra's meaning. A value containing ``=``, such as the
    package's own checkpoint names (``...-ep=9.ckpt``), is quoted for Hydra's grammar.
    """
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            out.append(item)
            continue
        if "=" in value and value[:1] not in ("'", '"'):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        plain = key[:1] not in ("+", "~")
        if plain and not key.startswith("hydra") and not (directory / key.split("@")[0]).is_dir():
            key = "++" + key
        out.append(f"{key}={value}")
    return out


def yaml_error(exc: Exception, fallback: Path) -> ConfigError:
    """A YAML syntax error as one line: the file, and the line and column where the parser gave up
    (with what it was parsing, when it says)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    name = getattr(mark, "name", None)
    where = Path(name) if name and not str(name).startswith("<") else fallback
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    text = f"cannot parse {where}"
    if mark is not None:
        text += f": line {mark.line + 1}, column {mark.column + 1}"
    text += f": {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and start is not mark:
        text += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
    elif context:
        text += f" ({context})"
    return ConfigError(text)


def load_config(config_path: Optional[str], config_name: str,
                overrides: Sequence[str] = ()) -> DictConfig:
    """Composes a config with Hydra (defaults lists, config groups, overrides) and unlocks it.

    ``config_path`` may be ``None`` when ``config_name`` is a path to a YAML file.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

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
            cfg = compose(config_name=stem, overrides=prepare_overrides(overrides, directory))
    except YAMLError as exc:  # a syntax error in the file or in a file it includes
        raise yaml_error(exc, directory / f"{stem}.yaml") from None
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__
        if isinstance(cause, YAMLError):
            raise yaml_error(cause, directory / f"{stem}.yaml") from None
        key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and key:
            detail = str(cause).strip().splitlines()[0]
            raise ConfigError(f"{key}: cannot apply the override ({detail})") from None
        msg = " ".join(str(exc).split()).replace("++", "")
        raise ConfigError(f"cannot compose config {stem!r}: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, False)
    if "hydra" in cfg:
        del cfg["hydra"]
    return cfg
