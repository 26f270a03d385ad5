"""``solo-mixmask pretrain --config-path DIR --config-name NAME [key=value ...]``."""

from __future__ import annotations

import argparse

from ..config import load_config


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """solo-learn/Hydra style: a config directory, a config name, then ``key=value`` overrides."""
    p.add_argument("--config-path", "-cp", default=None,
                   help="directory of the config (and its augmentations/ group)")
    p.add_argument("--config-name", "-cn", required=True,
                   help="config file name in that directory (or a path to a YAML file)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. optimizer.lr=0.5 "
                   "(use +key=value for new keys)")
    p.set_defaults(_accepts_overrides=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..engine.pretrain import describe, pretrain

    cfg = load_config(args.config_path, args.config_name, args.overrides)
    result = pretrain(cfg)
    print(describe(result))
    return 0
