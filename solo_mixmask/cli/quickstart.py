"""``solo-mixmask quickstart``: the main job, offline, on an embedded default.

Pretrains MixMask-SimCLR on scikit-learn's bundled digit scans (real images, no download), then
prints the KNN accuracy of the trained backbone next to that of the same backbone untrained.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None,
                   help="working folder for the digit images and the run (default: "
                   "$XDG_CACHE_HOME/solo-mixmask/quickstart, else ~/.cache/solo-mixmask/quickstart)")
    p.add_argument("--epochs", type=int, default=None, help="override max_epochs")
    p.add_argument("--method", default=None,
                   help="another method, e.g. mocov2plus for the vanilla baseline")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    p.set_defaults(_accepts_overrides=True)


#: heads sized for the digits, per base method (``--method`` swaps the config's SimCLR ones)
METHOD_KWARGS = {
    "simclr": "{proj_hidden_dim:256,proj_output_dim:64,temperature:0.2}",
    "mocov2plus": "{proj_hidden_dim:256,proj_output_dim:64,queue_size:1024,temperature:0.2}",
    "byol": "{proj_hidden_dim:256,proj_output_dim:64,pred_hidden_dim:256}",
    "simsiam": "{proj_hidden_dim:256,proj_output_dim:64,pred_hidden_dim:64}",
}
MIXMASK = "mixmask:{pattern:blocked,grid:2,ratio:0.5}"


def method_overrides(method: str) -> list[str]:
    """Overrides that switch the quickstart to ``method`` (its heads; MixMask for mixmask_*)."""
    from ..methods import METHODS

    base = method.removeprefix("mixmask_")
    if method not in METHODS or base not in METHOD_KWARGS:
        raise ConfigError(f"--method {method}: choose one of {sorted(METHODS)}")
    kwargs = METHOD_KWARGS[base]
    if method != base:
        kwargs = kwargs[:-1] + "," + MIXMASK + "}"
    return [f"method={method}", "~method_kwargs", f"+method_kwargs={kwargs}"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/solo-mixmask`` (``~/.cache/solo-mixmask`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "solo-mixmask"


#: classes of the digit scans (the classifier size while the config is checked)
DIGIT_CLASSES = 10


def check_config(cfg) -> None:
    """Everything a run checks before it reads its images: the config as the engine parses it
    and the model it describes (notices are left to the run itself)."""
    import contextlib
    import io
    import warnings

    from ..engine.pretrain import build_model, parse_pretrain_cfg

    with warnings.catch_warnings(record=True), contextlib.redirect_stderr(io.StringIO()):
        parsed = parse_pretrain_cfg(cfg)
        if parsed.data.num_classes is None:
            parsed.data.num_classes = DIGIT_CLASSES
        build_model(parsed)


def make_folder(out: Path) -> None:
    """Creates ``out`` (and its parents), or says in one line why it cannot."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create this folder "
                          f"({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: this folder is not writable")


def quickstart_config(out: Path, overrides: list[str]):
    """The packaged quickstart config with Hydra overrides, checked, then pointed at freshly
    written digits in ``out`` (nothing is written when the config or ``out`` is bad)."""
    from ..config import load_config
    from ..data.digits import write_digits

    configs = resources.files("solo_mixmask").joinpath("configs")
    with resources.as_file(configs) as directory:
        cfg = load_config(str(directory), "quickstart", overrides)
    if OmegaConf.is_missing(cfg.checkpoint, "dir") or cfg.checkpoint.dir is None:
        cfg.checkpoint.dir = str(out / "trained_models")
    # the image folders' names depend on the crop size: any name will do for the check
    cfg.data.train_path, cfg.data.val_path = str(out / "train"), str(out / "val")
    check_config(cfg)
    size = int(cfg.augmentations[0].crop_size)
    make_folder(out)
    train, val = write_digits(out / f"digits-{size}px", size=size)
    cfg.data.train_path, cfg.data.val_path = str(train), str(val)
    return cfg


def run(args: argparse.Namespace) -> int:
    import torch
    from lightning.pytorch.callbacks import Callback

    from ..engine.monitors import KNNMonitor
    from ..engine.pretrain import describe, pretrain

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs {args.epochs}: train for at least 1 epoch")
    out = Path(args.out) if args.out else cache_dir() / "quickstart"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: this is a file, not a folder")
    print(f"quickstart folder: {out} (digit images and the run; --out to change)")
    overrides = method_overrides(args.method) if args.method else []
    if args.epochs is not None:
        overrides.append(f"max_epochs={args.epochs}")
    overrides += list(args.overrides)
    cfg = quickstart_config(out, overrides)

    start = time.time()
    untrained: dict[str, float] = {}

    class Untrained(Callback):
        """Measures the KNN accuracy of the untouched initialisation."""

        def on_train_start(self, trainer, pl_module):
            for cb in trainer.callbacks:
                if isinstance(cb, KNNMonitor):
                    untrained["top1"], untrained["top5"] = cb.evaluate(pl_module)

    result = pretrain(cfg, callbacks=[Untrained()])
    minutes = (time.time() - start) / 60
    print(describe(result))
    trained = result.metrics.get("val_knn_acc1", float("nan"))
    print()
    print(f"KNN top-1 on {cfg.data.val_path} (k={cfg.knn_eval.k}, cosine, T={cfg.knn_eval.T}):")
    print(f"  untrained backbone: {untrained.get('top1', float('nan')):6.2f}%")
    print(f"  after {result.cfg.max_epochs} epochs of {result.cfg.method}: {trained:6.2f}%")
    print(f"  wall time: {minutes:.1f} min")
    return 0
