"""The ``solo-mixmask`` command (also ``python -m solo_mixmask``).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input (config, data, checkpoint, download) ends with one ``error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from ..__version__ import __version__
from ..errors import SoloMixMaskError, one_line

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("solo_mixmask.cli.quickstart",
                   "pretrain MixMask-SimCLR on bundled digit images and compare KNN accuracy"),
    "pretrain": ("solo_mixmask.cli.pretrain", "self-supervised pretraining from a config"),
    "knn": ("solo_mixmask.cli.evaluate", "weighted KNN accuracy of a checkpoint"),
    "linear": ("solo_mixmask.cli.evaluate", "linear evaluation of a frozen backbone"),
    "semi": ("solo_mixmask.cli.evaluate", "semi-supervised evaluation with 1%/10% of labels"),
    "export-detectron2": ("solo_mixmask.cli.evaluate",
                          "write a ResNet-50 backbone as Detectron2 weights"),
    "report": ("solo_mixmask.cli.evaluate", "tables and plots from result records and logs"),
    "show-masks": ("solo_mixmask.cli.masks", "draw MixMask masks and mixtures of real images"),
    "zoo": ("solo_mixmask.cli.zoo", "list, download, verify and convert pretrained checkpoints"),
    "solo-pretrain": ("solo_mixmask.cli.solo",
                      "run MixMask variants inside upstream solo-learn's own classes"),
}


def _load(name: str):
    module, _ = COMMANDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solo-mixmask",
        description="MixMask for Siamese self-supervised learning (MoCo v2, BYOL, SimCLR, "
        "SimSiam), solo-learn style.",
    )
    parser.add_argument("--version", action="version", version=f"solo-mixmask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        module = _load(name)
        if module is None:
            continue
        text = help_text.replace("%", "%%")  # argparse formats help strings
        p = sub.add_parser(name, help=text, description=text)
        module.add_arguments(p, name) if _takes_name(module) else module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _takes_name(module) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) > 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = list(getattr(args, "overrides", []) or []) + extra
    try:
        return int(args._module.run(args) or 0)
    except SoloMixMaskError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
