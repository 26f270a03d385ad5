"""Semi-supervised evaluation: the linear protocol trained on 1% or 10% of the labels.

The labelled subset is either drawn here (class-balanced, seeded: the same seed always gives the
same files) or read from a subset file with one image per line, as in the standard ImageNet
``1percent.txt`` / ``10percent.txt`` lists (``n01440764_10026.JPEG``); a line may also be a path
relative to the training root (``airplane/0001.jpg``) where file names repeat across classes.
The backbone is frozen by default (the paper's setting); ``finetune: true`` trains it too.

Config: the linear schema (see ``linear.py``) plus ``semi.fraction`` (0.01), ``semi.subset_file``
(wins over the fraction), ``semi.seed`` (0) and ``semi.balance`` (``equal``: the same count per class,
``proportional``: the same fraction of every class).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Dataset

from ..config.eval_schema import SemiConfig
from ..errors import ConfigError, DataError
from .linear import EvalResult, parse_linear_cfg, run_linear

BALANCES = ("equal", "proportional")


def balanced_subset(targets: Sequence[int], fraction: float, seed: int = 0,
                    balance: str = "equal") -> np.ndarray:
    """Sorted indices of a class-balanced subset of about ``fraction`` of the samples.

    ``equal`` takes ``round(fraction * n / classes)`` images of every class (at least one, at most
    the class size); ``proportional`` takes ``round(fraction * n_c)`` of class c. Each class draws
    from its own generator seeded by ``(seed, class)``, so a class's pick does not depend on the
    others.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"semi.fraction={fraction} must be in (0, 1]")
    if balance not in BALANCES:
        raise ConfigError(f"semi.balance={balance!r}: choose one of {list(BALANCES)}")
    targets = np.asarray(targets)
    labels = np.unique(targets)
    if len(labels) == 0:
        raise DataError("cannot draw a labelled subset from an empty dataset")
    per_class = fraction * len(targets) / len(labels)
    keep = []
    for label in labels:
        idx = np.flatnonzero(targets == label)
        want = per_class if balance == "equal" else fraction * len(idx)
        n = min(len(idx), max(1, int(round(want))))
        rng = np.random.default_rng([int(seed), int(label)])
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def read_subset_file(path: str | os.PathLike) -> list[str]:
    """Image names of a subset file: one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"subset file not found: {path}")
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.replace("\\", "/"))
    if not names:
        raise DataError(f"subset file {path} lists no images")
    return list(dict.fromkeys(names))


def match_subset(paths: Sequence[str], root: str | os.PathLike, names: Sequence[str],
                 source: str = "subset file") -> np.ndarray:
    """Indices of ``paths`` named by ``names`` (file names, or paths relative to ``root``).

    Every name must match exactly one image: unknown names and names shared by several images
    are DataErrors, so a wrong list can never silently train on fewer (or other) labels.
    """
    by_name: dict[str, list[int]] = {}
    by_rel: dict[str, int] = {}
    for i, p in enumerate(paths):
        by_name.setdefault(os.path.basename(p), []).append(i)
        by_rel[Path(os.path.relpath(p, root)).as_posix()] = i
    keep, missing = [], []
    for name in names:
        if "/" in name:
            hit = by_rel.get(name.removeprefix("./"))
            hits = [] if hit is None else [hit]
        else:
            hits = by_name.get(name, [])
        if not hits:
            missing.append(name)
        elif len(hits) > 1:
            raise DataError(f"{source}: {name!r} matches {len(hits)} images under {root}; write it "
                            "as class/file")
        else:
            keep.append(hits[0])
    if missing:
        raise DataError(f"{source} names {len(missing)} images that are not in {root} "
                        f"(e.g. {missing[0]!r})")
    return np.array(sorted(set(keep)), dtype=np.int64)


def _paths_of(ds: Dataset) -> Optional[list[str]]:
    images = getattr(ds, "images", None)
    return list(images.paths) if images is not None else None


def check_disjoint(train_paths: Sequence[str], val: Dataset, keep: np.ndarray) -> None:
    """Refuses a labelled subset that shares files with the validation set."""
    val_paths = _paths_of(val)
    if val_paths is None:
        return
    chosen = {os.path.realpath(train_paths[i]) for i in keep}
    shared = chosen.intersection(os.path.realpath(p) for p in val_paths)
    if shared:
        raise DataError(f"the labelled subset shares {len(shared)} images with the validation set "
                        f"(e.g. {sorted(shared)[0]}); use separate train and val folders")


def parse_semi_cfg(cfg: DictConfig) -> DictConfig:
    """The linear probe's parse with the ``semi`` section (``SemiConfig``); an unnamed run is
    ``semi-<dataset>``."""
    return parse_linear_cfg(cfg, SemiConfig)


def labels_tag(fraction: float) -> str:
    """``1%``, ``10%``: the column label of a label fraction."""
    pct = fraction * 100
    return f"{pct:.2g}%" if pct < 1 else f"{round(pct, 1):g}%"


def run_semi(cfg: DictConfig, command: Optional[str] = None) -> EvalResult:
    """Trains and scores the classifier on the labelled subset (see the module docstring)."""
    cfg = parse_semi_cfg(cfg)
    chosen: dict[str, Any] = {}

    def select_train(train: Dataset, val: Dataset) -> np.ndarray:
        paths = _paths_of(train)
        subset_file = cfg.semi.subset_file
        if subset_file is not None:
            if paths is None:
                raise ConfigError("semi.subset_file needs an ImageFolder training set")
            keep = match_subset(paths, cfg.data.train_path, read_subset_file(subset_file),
                                source=f"subset file {subset_file}")
        else:
            keep = balanced_subset(train.targets, float(cfg.semi.fraction), int(cfg.semi.seed),
                                   str(cfg.semi.balance))
        if paths is not None:
            check_disjoint(paths, val, keep)
        chosen["fraction"] = len(keep) / len(train)
        return keep

    def settings() -> dict[str, Any]:
        fraction = float(cfg.semi.fraction) if cfg.semi.subset_file is None else chosen["fraction"]
        return {"labels": labels_tag(fraction), "label_fraction": round(chosen["fraction"], 6),
                "subset_file": cfg.semi.subset_file, "subset_seed": int(cfg.semi.seed),
                "balance": str(cfg.semi.balance)}

    return run_linear(cfg, kind="semi", select_train=select_train, extra_settings=settings,
                      command=command, schema=None)
