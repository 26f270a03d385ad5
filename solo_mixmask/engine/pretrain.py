"""``pretrain(cfg)``: parse and check the config, build data and model, then fit with Lightning.

Everything that can fail on bad input (config, paths, images, model construction) runs before the
run directory is created, so a failed start writes nothing and overwrites nothing.
``parse_pretrain_cfg`` is the whole config check: the common one of ``config.pretrain`` and the
method's own, which only a layer above the methods can reach.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from ..config.loading import select
from ..config.pretrain import parse_common_cfg
from ..config.schema import trainer_section
from ..config.validation import closest
from ..data.pipeline import PretrainData, build_pretrain_data
from ..data.sampling import EpochSampler
from ..errors import CheckpointError, ConfigError, DataError, Interrupted, first_line, one_line
from ..methods import METHODS
from ..utils.distributed import configured_world_size
from .checkpoint import Checkpointer, find_resumable, new_version, write_json_atomic
from .interrupt import DataPosition, GracefulInterrupt
from .monitors import KNNMonitor
from .run_folder import RunFolder
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
    explicit = cfg.resume_from_checkpoint
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
    if cfg.tensorboard.enabled:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
    if cfg.wandb.enabled:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(name=cfg.name, project=cfg.wandb.project,
                                   entity=cfg.wandb.entity, offline=bool(cfg.wandb.offline),
                                   save_dir=str(run_dir)))
    return loggers


def _check_loggers(cfg: DictConfig) -> None:
    """Optional loggers need their packages; say so before anything is written."""
    from importlib.util import find_spec

    if cfg.tensorboard.enabled and not (
            find_spec("tensorboard") or find_spec("tensorboardX")):
        raise ConfigError("tensorboard.enabled=true needs the tensorboard package "
                          "(pip install tensorboard)")
    if cfg.wandb.enabled and not find_spec("wandb"):
        raise ConfigError("wandb.enabled=true needs the wandb package (pip install wandb)")


def parse_pretrain_cfg(cfg: DictConfig) -> DictConfig:
    """The validated, completed config (the caller's is not changed): the method's name first,
    then ``config.pretrain``'s checks, then the method's own (``add_and_assert_specific_cfg``)."""
    method = select(cfg, "method")
    if method is not None and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose one of {sorted(METHODS)}"
                          + closest(str(method), sorted(METHODS)))
    cfg = parse_common_cfg(cfg)
    METHODS[cfg.method].add_and_assert_specific_cfg(cfg)
    return cfg


def prepare(cfg: DictConfig) -> tuple[DictConfig, PretrainData, bool]:
    """Parses the config and builds the run's loaders (all input checks happen here); also says
    whether a GPU trains."""
    cfg = parse_pretrain_cfg(cfg)
    _check_loggers(cfg)
    gpu = uses_gpu(trainer_section(cfg))
    return cfg, build_pretrain_data(cfg, gpu), gpu


def steps_per_epoch(cfg: DictConfig, loader: Any) -> int:
    """Optimizer steps per epoch on each rank, as Lightning counts them (``limit_train_batches``
    and gradient accumulation included), from the config rather than from the live loader."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochSampler):
        per_rank = math.ceil(len(sampler.indices) / configured_world_size(cfg))
        batches = per_rank // int(cfg.optimizer.batch_size)
    else:
        batches = len(loader)
    limit = cfg.limit_train_batches
    if isinstance(limit, float) and limit <= 1.0:
        batches = int(batches * limit)
    elif limit is not None:
        batches = min(batches, int(limit))
    return max(1, math.ceil(batches / int(cfg.accumulate_grad_batches)))


def build_model(cfg: DictConfig) -> pl.LightningModule:
    """The method's module; a constructor that rejects its arguments is a config error."""
    try:
        model = METHODS[cfg.method](cfg)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cfg.method} with backbone {cfg.backbone.name} "
                          f"{dict(cfg.backbone.kwargs)}: {exc}") from None
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def check_resumable(path: Path, model: pl.LightningModule, cfg: DictConfig) -> Optional[dict]:
    """Refuses a checkpoint of another method or architecture before any folder is created;
    returns the data position it stored (None for checkpoints without one)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure
        raise CheckpointError(f"resume_from_checkpoint: cannot read {path}: "
                              f"{first_line(exc)}") from None
    stored = ckpt.get("cfg") if isinstance(ckpt, dict) else None
    weights = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"resume_from_checkpoint: {path} is not a training checkpoint of "
                              "this package (no state_dict)")
    method = (stored or {}).get("method")
    if method is not None and method != cfg.method:
        raise CheckpointError(f"resume_from_checkpoint: {path} is a {method} run; this config "
                              f"trains {cfg.method}")
    own = model.state_dict()
    for key, value in own.items():
        theirs = weights.get(key)
        if theirs is None:
            raise CheckpointError(f"resume_from_checkpoint: {path} does not match this model "
                                  f"(it has no '{key}')")
        if tuple(theirs.shape) != tuple(value.shape):
            raise CheckpointError(
                f"resume_from_checkpoint: {path} does not match this model: '{key}' is "
                f"{list(theirs.shape)} there, {list(value.shape)} here (another backbone, width "
                "or head size)")
    extra = next((k for k in weights if k not in own), None)
    if extra is not None:
        raise CheckpointError(f"resume_from_checkpoint: {path} does not match this model (it has "
                              f"'{extra}', which this model lacks)")
    loader_states = (((ckpt.get("loops") or {}).get("fit_loop") or {}).get("state_dict")
                     or {}).get("combined_loader") or []
    return loader_states[0] if loader_states else None


def pretrain(cfg: DictConfig, callbacks: Sequence[Callback] = (),
             trainer_kwargs: Optional[dict[str, Any]] = None) -> RunResult:
    """Trains ``cfg.method`` as configured; returns the run directory and last checkpoint.

    Bad input fails before the run directory exists; a run that fails before its first optimizer
    step removes the directory it created; Ctrl-C saves the state and raises ``Interrupted``.
    """
    cfg, data, gpu = prepare(cfg)
    train_loader, val_loader, bank = data.train, data.val, data.bank
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_model(cfg)
    model.total_steps = steps_per_epoch(cfg, train_loader) * int(cfg.max_epochs)
    if cfg.performance.compile:
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]
    ckpt_path = _resume_path(cfg)
    position = check_resumable(ckpt_path, model, cfg) if ckpt_path is not None else None

    first: list[Callback] = []
    sampler = getattr(train_loader, "sampler", None)
    if isinstance(sampler, EpochSampler):
        first.append(DataPosition(sampler))
        if position is not None:
            # Lightning restores a loader's state only inside an epoch, and creates the first
            # iterator before it sets the epoch: give the sampler its place now
            sampler.load_state_dict(position)
    extra: list[Callback] = []
    if bank is not None:
        knn = cfg.knn_eval
        extra.append(KNNMonitor(bank, val_loader, int(cfg.data.num_classes), int(knn.k),
                                float(knn.T), str(knn.distance_func), int(knn.frequency),
                                feature=str(knn.feature), vote=str(knn.vote)))
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
    folder = RunFolder(run_dir, cfg, primary=is_zero, what=f"checkpoint.dir={cfg.checkpoint.dir}",
                       keep_on=(Interrupted,))
    with folder:
        if ckpt_path is not None:
            print(f"Resuming from {ckpt_path}")
        all_callbacks: list[Callback] = first + list(extra)
        if cfg.enable_progress_bar:
            all_callbacks.insert(len(first), TQDMProgressBar(refresh_rate=1))
        checkpointer = None
        if bool(cfg.checkpoint.enabled):
            checkpointer = Checkpointer(run_dir, cfg.name, version, cfg.checkpoint.frequency,
                                        bool(cfg.checkpoint.keep_prev))
            all_callbacks.append(checkpointer)
        interrupt = GracefulInterrupt(checkpointer)
        all_callbacks.append(interrupt)
        all_callbacks += list(callbacks)

        kwargs = trainer_kwargs_for(trainer_section(cfg), run_dir, all_callbacks,
                                    _loggers(cfg, run_dir))
        kwargs.update(trainer_kwargs or {})
        trainer = pl.Trainer(**kwargs)
        folder.steps = lambda: int(trainer.global_step)
        try:
            trainer.fit(model, train_loader, val_loader,
                        ckpt_path=str(ckpt_path) if ckpt_path else None)
        except SystemExit:
            if not interrupt.stopped_at_once:
                raise
            last = None if folder.discard_if_untrained() else (
                checkpointer.last if checkpointer is not None else None)
            raise Interrupted(last, trainer.current_epoch, trainer.global_step,
                              saved_now=False) from None
        except DataError as exc:
            last = checkpointer.last if checkpointer is not None else None
            where = f"last checkpoint: {last}" if last else "no checkpoint was written yet"
            if folder.discard_if_untrained():
                where = "nothing was kept"
            raise DataError(f"{one_line(exc)} (stopped at epoch {trainer.current_epoch}, step "
                            f"{trainer.global_step}; {where})") from None
        finally:
            data.close()  # the loaders' workers stop when the run does

    last = checkpointer.last if checkpointer is not None else None
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
