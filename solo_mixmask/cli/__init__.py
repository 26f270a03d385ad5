"""The ``solo-mixmask`` command (also ``python -m solo_mixmask``).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Every exception that escapes a command becomes one ``error: ...`` line: exit code 2 for bad input
(config, data, checkpoint, download), 1 for anything else (``--debug`` or ``SOLO_MIXMASK_DEBUG=1``
add the traceback). Ctrl-C exits with 130 after saving the run (``engine/interrupt.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Optional, Sequence

from ..__version__ import __version__
from ..errors import Interrupted, SoloMixMaskError, first_line, one_line

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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also SOLO_MIXMASK_DEBUG=1)")
    parser = argparse.ArgumentParser(
        prog="solo-mixmask", parents=[common],
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
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        module.add_arguments(p, name) if _takes_name(module) else module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _takes_name(module) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) > 1


#: exceptions of libraries that mean bad input rather than a bug here
def _is_bad_input(exc: BaseException) -> bool:
    if isinstance(exc, SoloMixMaskError):
        return True
    name = type(exc).__name__
    return name in ("MisconfigurationException", "OmegaConfBaseException", "ConfigKeyError",
                    "ValidationError", "HydraException", "OverrideParseException")


def _close_progress_bars() -> None:
    """Ends any progress bar line, so that the error starts a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def report(exc: BaseException, debug: bool) -> int:
    """The exit code and one ``error:`` line for an exception that escaped a command."""
    _close_progress_bars()
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, Interrupted):
        print(exc.advice(), file=sys.stderr)
        return 130
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    if _is_bad_input(exc):
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    hint = "" if debug else " (rerun with --debug or SOLO_MIXMASK_DEBUG=1 for the traceback)"
    print(f"error: {type(exc).__name__}: {first_line(exc)}{hint}", file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get("SOLO_MIXMASK_DEBUG") == "1"
    if args.command is None:
        parser.print_help()
        return 1
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = list(getattr(args, "overrides", []) or []) + extra
    try:
        return int(args._module.run(args) or 0)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into a line
        return report(exc, debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
