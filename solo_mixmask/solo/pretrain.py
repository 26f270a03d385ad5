"""solo-learn's pretraining flow, run on a composed config without a solo-learn checkout.

solo-learn's ``main_pretrain.py`` is a script at the root of its repository, not part of the
installed ``solo`` package, so it is not importable after ``pip install``. This module follows the
same steps with solo-learn's public pieces, in the same order and with the same defaults: parse the
config (``solo.args.pretrain.parse_cfg``), build the method from ``solo.methods.METHODS``, the
classification loader for validation, the N-crop pretraining loader, auto-resume, solo-learn's
``Checkpointer`` (checkpoints and ``args.json`` under ``checkpoint.dir/<method>``), optional W&B
logging, then ``Trainer.fit`` with the Trainer arguments found in the config. DALI and AutoUMAP are
left to ``main_pretrain.py`` (with ``MixMaskCallback``); asking for them here is a ConfigError.
"""

from __future__ import annotations

import inspect
import os
import traceback
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError


def _parse(cfg: DictConfig) -> DictConfig:
    """solo-learn's parse_cfg; its bare ``assert`` failures become one readable ConfigError."""
    from solo.args.pretrain import parse_cfg

    OmegaConf.set_struct(cfg, False)
    try:
        return parse_cfg(cfg)
    except AssertionError as exc:
        raise ConfigError(f"solo-learn rejected the config: {_assertion(exc)}") from None


def _assertion(exc: AssertionError) -> str:
    if str(exc):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    return (frames[-1].line or "assertion failed") if frames else "assertion failed"


def _val_loader(cfg: DictConfig):
    from solo.data.classification_dataloader import prepare_data

    no_val = (cfg.data.dataset == "custom" and (cfg.data.no_labels or cfg.data.val_path is None)) \
        or (cfg.data.dataset in ("imagenet", "imagenet100") and cfg.data.val_path is None)
    if no_val:
        return None
    _, loader = prepare_data(cfg.data.dataset, train_data_path=cfg.data.train_path,
                             val_data_path=cfg.data.val_path, data_format=cfg.data.format,
                             batch_size=cfg.optimizer.batch_size,
                             num_workers=cfg.data.num_workers)
    return loader


def _train_loader(cfg: DictConfig):
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
        prepare_dataloader,
        prepare_datasets,
    )

    transform = FullTransformPipeline([
        NCropAugmentation(build_transform_pipeline(cfg.data.dataset, aug), aug.num_crops)
        for aug in cfg.augmentations
    ])
    if cfg.debug_augmentations:
        print("Transforms:")
        print(transform)
    dataset = prepare_datasets(cfg.data.dataset, transform, train_data_path=cfg.data.train_path,
                               data_format=cfg.data.format, no_labels=cfg.data.no_labels,
                               data_fraction=cfg.data.fraction)
    return prepare_dataloader(dataset, batch_size=cfg.optimizer.batch_size,
                              num_workers=cfg.data.num_workers)


def _resume(cfg: DictConfig) -> tuple[Optional[str], Optional[str]]:
    """The checkpoint to resume from and the W&B run id, as solo-learn's auto-resume finds them."""
    if cfg.resume_from_checkpoint is not None:
        path = str(cfg.resume_from_checkpoint)
        del cfg.resume_from_checkpoint
        return path, None
    if not cfg.auto_resume.enabled:
        return None, None
    from solo.utils.auto_resumer import AutoResumer

    resumer = AutoResumer(checkpoint_dir=os.path.join(cfg.checkpoint.dir, cfg.method),
                          max_hours=cfg.auto_resume.max_hours)
    path, run_id = resumer.find_checkpoint(cfg)
    if path is not None:
        print(f"Resuming from previous checkpoint that matches specifications: '{path}'")
    return path, run_id


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Trains ``cfg.method`` (MixMask variants must be registered first); returns where the last
    checkpoint was written (``None`` when checkpointing is off) and the final logged metrics."""
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from solo.methods import METHODS
    from solo.utils.checkpointer import Checkpointer
    from solo.utils.misc import make_contiguous

    cfg = _parse(cfg)
    if cfg.data.format == "dali":
        raise ConfigError("data.format=dali: run solo-learn's main_pretrain.py with "
                          "+hydra.callbacks.mixmask._target_=solo_mixmask.solo.MixMaskCallback")
    if OmegaConf.select(cfg, "auto_umap.enabled"):  # solo-learn's key, absent or false by default
        raise ConfigError("auto_umap: run solo-learn's main_pretrain.py with the MixMask callback")
    if cfg.method not in METHODS:
        raise ConfigError(f"method {cfg.method!r} is not in solo.methods.METHODS; choose one of "
                          f"{sorted(METHODS)}")
    if cfg.data.num_large_crops != 2 and cfg.method not in ("wmse", "mae"):
        raise ConfigError(f"{cfg.method} needs two large crops, the augmentations give "
                          f"{cfg.data.num_large_crops}")

    seed_everything(cfg.seed)
    model = METHODS[cfg.method](cfg)
    make_contiguous(model)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)

    val_loader = _val_loader(cfg)
    train_loader = _train_loader(cfg)
    ckpt_path, wandb_run_id = _resume(cfg)

    callbacks: list[Any] = []
    checkpointer = None
    if cfg.checkpoint.enabled:
        checkpointer = Checkpointer(cfg, logdir=os.path.join(cfg.checkpoint.dir, cfg.method),
                                    frequency=cfg.checkpoint.frequency,
                                    keep_prev=cfg.checkpoint.keep_prev)
        callbacks.append(checkpointer)
    logger: Any = None
    if cfg.wandb.enabled:
        from lightning.pytorch.callbacks import LearningRateMonitor
        from lightning.pytorch.loggers.wandb import WandbLogger

        logger = WandbLogger(name=cfg.name, project=cfg.wandb.project, entity=cfg.wandb.entity,
                             offline=cfg.wandb.offline, resume="allow" if wandb_run_id else None,
                             id=wandb_run_id)
        logger.watch(model, log="gradients", log_freq=100)
        logger.log_hyperparams(OmegaConf.to_container(cfg))
        callbacks.append(LearningRateMonitor(logging_interval="step"))

    trainer = Trainer(**_trainer_kwargs(cfg, logger, callbacks))
    trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if getattr(v, "numel", lambda: 1)() == 1}
    last = getattr(checkpointer, "last_ckpt", None)
    return {"checkpoint": str(last) if last else None, "metrics": metrics}


def _trainer_kwargs(cfg: DictConfig, logger: Any, callbacks: list[Any]) -> dict[str, Any]:
    """Every top-level config key that is a ``Trainer`` argument, plus solo-learn's fixed ones."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies.ddp import DDPStrategy

    given = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(given, dict)
    valid = inspect.signature(Trainer.__init__).parameters
    kwargs = {k: given[k] for k in valid if k in given}
    kwargs.update({
        "logger": logger if logger is not None else None,
        "callbacks": callbacks,
        "enable_checkpointing": False,
        "strategy": DDPStrategy(find_unused_parameters=False) if cfg.strategy == "ddp"
        else cfg.strategy,
    })
    return kwargs
