"""``solo-mixmask solo-pretrain --config-path DIR --config-name NAME [key=value ...]``.

Runs a MixMask variant inside upstream solo-learn's own method classes: composes the config with
Hydra, translates this package's config vocabulary where solo-learn lacks it, registers the variants
in ``solo.methods.METHODS`` and runs solo-learn's pretraining flow (``solo_mixmask.solo.pretrain``).
The checkpoints are solo-learn's own, for its ``main_linear.py``.
"""

from __future__ import annotations

import argparse

from .pretrain import add_config_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--no-adapt", action="store_true",
                   help="pass the config to solo-learn exactly as composed (no translation of "
                   "scheduler/dataset/devices names)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..solo import adapt_cfg, register, require_solo

    require_solo()
    cfg = load_config(args.config_path, args.config_name, args.overrides)
    if not args.no_adapt:
        for note in adapt_cfg(cfg):
            print(f"solo-pretrain: {note}")
    register()
    from ..solo.pretrain import pretrain

    result = pretrain(cfg)
    if result["checkpoint"]:
        print(f"solo-pretrain: last checkpoint {result['checkpoint']}")
    return 0
