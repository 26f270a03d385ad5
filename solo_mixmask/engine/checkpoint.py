"""Run directories, atomic checkpoints and auto-resume (solo-learn's layout).

A run lives in ``<checkpoint.dir>/<method>/<version>/`` with ``args.json`` and
``<name>-<version>-ep=<epoch>.ckpt``. Checkpoints are written to a temporary file and renamed, so a
kill at any moment leaves either the previous complete checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

#: ``-ep=<epoch>.ckpt`` after a complete epoch, ``-ep=<epoch>-step=<step>.ckpt`` when a run was
#: interrupted inside that epoch
CKPT_RE = re.compile(r"-ep=(\d+)(?:-step=(\d+))?\.ckpt$")

# keys that may change between a run and its resumption
_VOLATILE = ("auto_resume", "resume_from_checkpoint", "checkpoint", "devices", "num_nodes",
             "accelerator", "strategy", "precision", "wandb", "tensorboard", "performance",
             "data.num_workers", "dali", "max_epochs", "knn_eval", "limit_train_batches",
             "limit_val_batches", "log_every_n_steps", "enable_progress_bar")


def new_version(parent: Path) -> str:
    rng = random.Random(time.time_ns() ^ os.getpid())
    while True:
        version = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        if not (parent / version).exists():
            return version


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The parts of a config that identify a run for auto-resume."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for key in _VOLATILE:
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    data.pop("wandb_run_id", None)
    return data


def same_settings(saved: Any, current: Any) -> bool:
    """Whether a run's saved settings are the current ones. Keys on one side only are options that
    the version which started the run did not have (or no longer has): they do not tell runs apart,
    so a package upgrade does not orphan a half-finished run."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return all(same_settings(saved[k], current[k]) for k in saved.keys() & current.keys())
    return saved == current


def checkpoint_epoch(path: Path) -> int:
    m = CKPT_RE.search(path.name)
    return int(m.group(1)) if m else -1


def checkpoint_progress(path: Path) -> tuple[int, int, int]:
    """Sort key of a run's checkpoints: epoch, then complete epochs after interrupted ones."""
    m = CKPT_RE.search(path.name)
    if not m:
        return (-1, 0, 0)
    interrupted = m.group(2) is not None
    return (int(m.group(1)), 0 if interrupted else 1, int(m.group(2) or 0))


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    ckpts = [p for p in run_dir.glob("*.ckpt") if CKPT_RE.search(p.name)]
    return max(ckpts, key=checkpoint_progress) if ckpts else None


def find_resumable(cfg: DictConfig, root: Path, max_hours: float) -> Optional[Path]:
    """The newest checkpoint of a run under ``root`` whose args.json matches ``cfg``."""
    if not root.is_dir():
        return None
    target = fingerprint(cfg)
    best: Optional[tuple[float, Path]] = None
    for args in root.glob("*/args.json"):
        try:
            saved = OmegaConf.create(json.loads(args.read_text()))
        except (OSError, ValueError):
            continue
        if not same_settings(fingerprint(saved), target):
            continue
        ckpt = latest_checkpoint(args.parent)
        if ckpt is None:
            continue
        mtime = ckpt.stat().st_mtime
        if max_hours and time.time() - mtime > max_hours * 3600:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, ckpt)
    return best[1] if best else None


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class Checkpointer(Callback):
    """Saves ``<name>-<version>-ep=<epoch>.ckpt`` every ``frequency`` epochs, atomically."""

    def __init__(self, run_dir: Path, name: str, version: str, frequency: int = 1,
                 keep_prev: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.name, self.version = name, version
        self.frequency = max(1, int(frequency))
        self.keep_prev = keep_prev
        self.last: Optional[Path] = latest_checkpoint(self.run_dir)

    def path_for(self, epoch: int, step: Optional[int] = None) -> Path:
        tail = f"-step={step}" if step is not None else ""
        return self.run_dir / f"{self.name}-{self.version}-ep={epoch}{tail}.ckpt"

    def save(self, trainer: pl.Trainer, interrupted: bool = False) -> Path:
        """Writes the state now (after a complete epoch, or at a batch boundary when
        ``interrupted``) and removes the previous checkpoint unless ``keep_prev``."""
        path = self.path_for(trainer.current_epoch, trainer.global_step if interrupted else None)
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, path)
            if self.last is not None and self.last != path and not self.keep_prev:
                self.last.unlink(missing_ok=True)
        trainer.strategy.barrier("checkpoint-rename")
        self.last = path
        return path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last_epoch = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.frequency == 0 or last_epoch:
            self.save(trainer)
