"""``pretrain(cfg)``: parse and check the config, build data and model, then fit with Lightning.

Everything that can fail on bad input (config, paths, images, model construction) runs before the
run directory is created, so a failed start writes nothing and overwrites nothing.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from ..config.loading import select
from ..config.pretrain import parse_pretrain_cfg
from ..data.loaders import (
    build_eval_loader,
    build_pretrain_dataset,
    build_pretrain_loader,
    count_classes,
)
from ..errors import CheckpointError, ConfigError
from ..methods import METHODS
from .checkpoint import Checkpointer, find_resumable, new_version, write_json_atomic
from .monitors import KNNMonitor
from .trainer import trainer_kwargs as trainer_kwargs_for
from .trainer import uses_gpu


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Optional[Path]
    cfg: DictConfig
    model: pl.LightningModule
    metrics: dict[str, float]


def _resume_path(cfg: DictConfig) -> Optional[Path]:
    explicit = select(cfg, "resume_from_checkpoint")
    if explicit:
        path = Path(str(explicit))
        if not path.is_file():
            raise CheckpointError(f"resume_from_checkpoint: no such file: {path}")
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a torn file is not one
            raise CheckpointError(f"resume_from_checkpoint: {path} is not a complete checkpoint "
                                  "(truncated or not written by torch.save)")
        return path
    if bool(cfg.auto_resume.enabled):
        root = Path(cfg.checkpoint.dir) / cfg.method
        return find_resumable(cfg, root, float(cfg.auto_resume.max_hours))
    return None


def _loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="logs")]
    if bool(select(cfg, "tensorboard.enabled", False)):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
    if bool(select(cfg, "wandb.enabled", False)):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(name=cfg.name, project=cfg.wandb.project,
                                   entity=cfg.wandb.entity, offline=bool(cfg.wandb.offline),
                                   save_dir=str(run_dir)))
    return loggers


def _check_loggers(cfg: DictConfig) -> None:
    """Optional loggers need their packages; say so before anything is written."""
    from importlib.util import find_spec

    if bool(select(cfg, "tensorboard.enabled", False)) and not (
            find_spec("tensorboard") or find_spec("tensorboardX")):
        raise ConfigError("tensorboard.enabled=true needs the tensorboard package "
                          "(pip install tensorboard)")
    if bool(select(cfg, "wandb.enabled", False)) and not find_spec("wandb"):
        raise ConfigError("wandb.enabled=true needs the wandb package (pip install wandb)")


def prepare(cfg: DictConfig) -> tuple[DictConfig, Any, Any, Optional[Any]]:
    """Parses the config and builds the loaders (all input checks happen here)."""
    cfg = parse_pretrain_cfg(cfg)
    _check_loggers(cfg)
    if cfg.data.dataset == "custom" and select(cfg, "data.num_classes") is None:
        cfg.data.num_classes = count_classes(cfg)
    gpu = uses_gpu(cfg)
    if cfg.data.format == "dali":
        from ..data.dali import build_dali_pretrain_loader

        train_loader = build_dali_pretrain_loader(cfg, gpu)
    else:
        train_loader = build_pretrain_loader(cfg, build_pretrain_dataset(cfg), gpu)
    val_loader = None
    val_path = select(cfg, "data.val_path")
    if val_path and not cfg.data.no_labels:
        val_loader = build_eval_loader(cfg, str(val_path), train=False, gpu=gpu)
    return cfg, train_loader, val_loader, gpu


def pretrain(cfg: DictConfig, callbacks: Sequence[Callback] = (),
             trainer_kwargs: Optional[dict[str, Any]] = None) -> RunResult:
    """Trains ``cfg.method`` as configured; returns the run directory and last checkpoint."""
    cfg, train_loader, val_loader, gpu = prepare(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)
    model = METHODS[cfg.method](cfg)
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if bool(select(cfg, "performance.compile", False)):
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]
    ckpt_path = _resume_path(cfg)

    extra: list[Callback] = []
    if bool(cfg.knn_eval.enabled) and cfg.knn_eval.bank == "clean":
        if val_loader is None:
            raise ConfigError("knn_eval.bank='clean' needs data.val_path with labels")
        bank = build_eval_loader(cfg, str(cfg.data.train_path), train=True, gpu=gpu)
        extra.append(KNNMonitor(bank, val_loader, int(cfg.data.num_classes), int(cfg.knn_eval.k),
                                float(cfg.knn_eval.T), str(cfg.knn_eval.distance_func),
                                int(cfg.knn_eval.frequency)))
        val_loader = None  # the monitor evaluates; no separate validation loop needed

    # the run directory: the resumed run's own, or a new one
    root = Path(cfg.checkpoint.dir) / cfg.method
    if ckpt_path is not None and ckpt_path.parent.parent == root:
        run_dir, version = ckpt_path.parent, ckpt_path.parent.name
    else:
        version = new_version(root)
        run_dir = root / version
    is_zero = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(
        os.environ.get("NODE_RANK", "0")) == 0
    if is_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        args_file = run_dir / "args.json"
        if not args_file.exists():
            args = OmegaConf.to_container(cfg, resolve=True)
            write_json_atomic(args_file, args)
    if ckpt_path is not None:
        print(f"Resuming from {ckpt_path}")

    all_callbacks: list[Callback] = list(extra)
    if bool(select(cfg, "enable_progress_bar", True)):
        all_callbacks.insert(0, TQDMProgressBar(refresh_rate=1))
    if bool(cfg.checkpoint.enabled):
        all_callbacks.append(Checkpointer(run_dir, cfg.name, version, cfg.checkpoint.frequency,
                                          bool(cfg.checkpoint.keep_prev)))
    all_callbacks += list(callbacks)

    kwargs = trainer_kwargs_for(cfg, run_dir, all_callbacks, _loggers(cfg, run_dir))
    kwargs.update(trainer_kwargs or {})
    trainer = pl.Trainer(**kwargs)
    trainer.fit(model, train_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)

    last = None
    for cb in all_callbacks:
        if isinstance(cb, Checkpointer):
            last = cb.last
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if torch.is_tensor(v) and v.numel() == 1 or isinstance(v, (int, float))}
    if is_zero:
        write_json_atomic(run_dir / "final_metrics.json", metrics)
    return RunResult(run_dir, last, cfg, model, metrics)


def describe(result: RunResult) -> str:
    lines = [f"run directory: {result.run_dir}"]
    if result.checkpoint:
        lines.append(f"checkpoint:    {result.checkpoint}")
    if result.metrics:
        lines.append("metrics: " + json.dumps({k: round(v, 4) for k, v in result.metrics.items()
                                                if not k.endswith("_step")}))
    return "\n".join(lines)
