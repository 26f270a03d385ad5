"""Linear evaluation with solo-learn's ``main_linear`` config schema.

A pretrained backbone (this package, solo-learn or the official MoCo/MixMask layout) is frozen, kept
in eval mode (its BatchNorm statistics never move), and a linear classifier is trained on
random-resized crops and flips, then scored on centre crops of the validation set (top-1/top-5).
``finetune: true`` trains the backbone too (the semi-supervised fine-tuning protocol).
``features.precompute: true`` is a fast path: features of unaugmented images are extracted once and
the classifier trains on them; it is not the standard protocol and is recorded as such.

Runs live in ``<checkpoint.dir>/<linear|semi>/<version>/`` (``args.json``, CSV logs under ``logs/``,
the final checkpoint); the result record goes to ``results_dir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from ..config.datasets import DATASETS
from ..config.eval_schema import LinearConfig
from ..config.pretrain import (
    check_dataset,
    check_decay_steps,
    check_optimizer_kwargs,
    normalise_verify,
    resolve_hardware,
    scale_lrs,
)
from ..config.schema import trainer_section
from ..config.solo_keys import report_ignored
from ..config.validation import validate
from ..data.augmentations import build_eval_transform, build_linear_train_transform
from ..engine.checkpoint import Checkpointer, find_resumable, new_version
from ..engine.run_folder import RunFolder
from ..engine.trainer import frozen_modules_in_eval_mode, trainer_kwargs, uses_gpu
from ..errors import CheckpointError, ConfigError, DataError
from ..utils.features import extract_features
from ..utils.optim import configure_optimization
from .checkpoints import load_backbone, load_checkpoint_file, resolve_backbone_spec, split_backbone
from .feature_probe import train_feature_probe
from .features import class_names, eval_loader, image_dataset
from .records import make_record, provenance, write_record

#: crop sizes of the usual protocols when the config does not give one
DEFAULT_CROP = {"cifar10": 32, "cifar100": 32, "stl10": 96, "tiny-imagenet": 64}


def _checkpoint_path(cfg: DictConfig) -> str:
    path = cfg.pretrained_feature_extractor
    if path in (None, "", "None", "none"):
        raise ConfigError("set pretrained_feature_extractor=PATH (the pretrained checkpoint)")
    if not Path(str(path)).is_file():
        raise CheckpointError(f"pretrained_feature_extractor: checkpoint not found: {path}")
    return str(path)


def _parse_data(cfg: DictConfig) -> None:
    dataset = check_dataset(cfg)
    normalise_verify(cfg.data)
    info = DATASETS[dataset]
    aug = cfg.data.augmentations
    if aug.crop_size is None:
        aug.crop_size = int(cfg.data.crop_size or DEFAULT_CROP.get(dataset, 224))
    if aug.mean is None:
        aug.mean = list(cfg.data.mean or info.mean)
    if aug.std is None:
        aug.std = list(cfg.data.std or info.std)


def parse_linear_cfg(cfg: DictConfig, schema: type = LinearConfig) -> DictConfig:
    """The validated, completed config of a linear (or semi-supervised) evaluation, learning rates
    scaled by the total batch size / 256 (solo-learn's convention)."""
    given = cfg
    cfg = validate(cfg, schema)
    report_ignored(cfg, given)
    _checkpoint_path(cfg)
    _parse_data(cfg)
    cfg.optimizer.name = str(cfg.optimizer.name).lower()
    if cfg.optimizer.backbone_lr is None:
        cfg.optimizer.backbone_lr = float(cfg.optimizer.lr)
    check_optimizer_kwargs(cfg)
    if cfg.finetune and cfg.features.precompute:
        raise ConfigError("features.precompute needs a frozen backbone (finetune: false)")
    resolve_hardware(cfg)
    if cfg.name is None:
        cfg.name = f"{schema.RUN_KIND}-{cfg.data.dataset}"
    check_decay_steps(cfg)
    if cfg.features.probe == "wmse" and (not cfg.features.precompute
                                         or cfg.optimizer.name != "adam"):
        raise ConfigError("features.probe=wmse trains Adam on precomputed features: set "
                          "features.precompute=true and optimizer.name=adam")
    scale_lrs(cfg, ("lr", "backbone_lr"))
    return cfg


# ------------------------------------------------------------------------------------------ data
def check_classes(cfg: DictConfig, train: Dataset, val: Dataset) -> int:
    """The class count, after checking that the configured count, the training folders and the
    validation folders agree (a mismatch would silently mislabel or crash deep in training)."""
    info = DATASETS[cfg.data.dataset]
    train_names, val_names = class_names(train), class_names(val)
    found = len(train_names) if train_names else None
    expected = cfg.data.num_classes or info.num_classes
    if expected is not None and found is not None and int(expected) != found:
        raise DataError(f"label count mismatch: {cfg.data.dataset} expects {expected} classes but "
                        f"{cfg.data.train_path} has {found} class folders")
    if train_names and val_names and train_names != val_names:
        extra = sorted(set(val_names) ^ set(train_names))[:3]
        raise DataError(f"label count mismatch: {cfg.data.train_path} has {len(train_names)} "
                        f"classes, {cfg.data.val_path} has {len(val_names)} (differing: {extra})")
    num = found or expected
    if not num:
        raise DataError(f"cannot tell the number of classes of {cfg.data.train_path}")
    targets = getattr(train, "targets", None)
    if targets is not None and len(targets) and max(targets) >= int(num):
        raise DataError(f"label count mismatch: labels go up to {max(targets)} but there are "
                        f"{num} classes")
    return int(num)


def build_datasets(cfg: DictConfig, augment: bool) -> tuple[Dataset, Dataset, int]:
    """Train (crop+flip when ``augment``, else centre crops) and validation datasets."""
    size = int(cfg.data.augmentations.crop_size)
    mean, std = list(cfg.data.augmentations.mean), list(cfg.data.augmentations.std)
    train_tf = (build_linear_train_transform(size, mean, std) if augment
                else build_eval_transform(size, mean, std))
    train = image_dataset(cfg.data, cfg.data.train_path, train_tf, True)
    val = image_dataset(cfg.data, cfg.data.val_path, build_eval_transform(size, mean, std), False)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"no images in {cfg.data.train_path if len(train) == 0 else cfg.data.val_path}")
    return train, val, check_classes(cfg, train, val)


# ----------------------------------------------------------------------------------------- model
class LinearModel(pl.LightningModule):
    """A linear classifier on a frozen (eval-mode, no-grad) or fine-tuned backbone; with no
    backbone the inputs are precomputed features."""

    def __init__(self, backbone: Optional[nn.Module], features_dim: int, num_classes: int,
                 cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.finetune = bool(cfg.finetune) and backbone is not None
        self.classifier = nn.Linear(features_dim, num_classes)
        self.num_classes = num_classes
        if backbone is not None and not self.finetune:
            backbone.requires_grad_(False)
            backbone.eval()
        self._sums: Optional[torch.Tensor] = None
        #: (epoch, metrics) of the latest complete validation
        self.last_val: Optional[tuple[int, dict[str, float]]] = None

    def train(self, mode: bool = True) -> LinearModel:
        super().train(mode)
        if self.backbone is not None and not self.finetune:
            self.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores captured module modes rather than calling train()/eval(); keep the
        # frozen backbone's BatchNorm statistics fixed whatever mode the module was left in
        self.train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is None:
            feats = x
        elif self.finetune:
            feats = self.backbone(x)
        else:
            with torch.no_grad():
                feats = self.backbone(x)
        return self.classifier(feats.float())

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch[-2], batch[-1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc1 = (logits.argmax(1) == y).float().mean() * 100
        self.log_dict({"train_loss": loss.detach(), "train_acc1": acc1}, on_step=False,
                      on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch[-2], batch[-1]
        logits = self(x)
        top = logits.topk(min(5, self.num_classes), dim=1).indices
        sums = torch.stack([torch.tensor(float(len(y)), device=y.device),
                            F.cross_entropy(logits, y, reduction="sum"),
                            (top[:, 0] == y).float().sum(), (top == y[:, None]).any(1).float().sum()])
        self._sums = sums if self._sums is None else self._sums + sums

    def on_validation_epoch_end(self) -> None:
        if self._sums is None:
            return
        sums = self._sums
        if self.trainer.world_size > 1:
            sums = self.all_gather(sums).reshape(-1, 4).sum(0)
        n = sums[0].clamp_min(1)
        metrics = {"val_loss": sums[1] / n, "val_acc1": sums[2] / n * 100,
                   "val_acc5": sums[3] / n * 100}
        self.log_dict(metrics, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.last_val = (self.current_epoch, {k: float(v) for k, v in metrics.items()})
        self._sums = None

    def configure_optimizers(self) -> Any:
        groups = [{"name": "classifier", "params": list(self.classifier.parameters())}]
        if self.finetune:
            groups.append({"name": "backbone", "params": list(self.backbone.parameters()),
                           "lr": float(self.cfg.optimizer.backbone_lr)})
        return configure_optimization(groups, self.cfg.optimizer, self.cfg.scheduler,
                                      lambda: int(self.trainer.estimated_stepping_batches),
                                      int(self.cfg.max_epochs))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cfg"] = OmegaConf.to_container(self.cfg, resolve=True)


# ------------------------------------------------------------------------------------------- run
@dataclass
class EvalResult:
    metrics: dict[str, float]
    run_dir: Path
    record_path: Optional[Path]  # None on ranks other than global zero
    record: dict[str, Any]
    checkpoint: Optional[Path]


def load_pretrained(cfg: DictConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The backbone named by the config (completed from the checkpoint) and the checkpoint's
    provenance (format, method, variant, epochs)."""
    path = _checkpoint_path(cfg)
    obj = load_checkpoint_file(path)
    _, fmt = split_backbone(obj)
    kwargs = OmegaConf.to_container(cfg.backbone.kwargs, resolve=True) or {}
    name, kwargs = resolve_backbone_spec(obj, cfg.backbone.name, kwargs)
    info = provenance(path, obj, fmt)
    del obj
    backbone, built = load_backbone(path, name, kwargs)
    cfg.backbone.name, cfg.backbone.kwargs = built["name"], built["kwargs"]
    info["backbone"] = built["name"]
    return backbone, info


def _accelerator_device(cfg: DictConfig) -> torch.device:
    return torch.device("cuda" if uses_gpu(trainer_section(cfg)) else "cpu")


def precompute(backbone: nn.Module, train: Dataset, val: Dataset, cfg: DictConfig
               ) -> tuple[TensorDataset, TensorDataset]:
    """Features of every (unaugmented) train and val image, extracted once."""
    device = _accelerator_device(cfg)
    backbone = backbone.to(device)
    workers, bs = int(cfg.data.num_workers), int(cfg.optimizer.batch_size)
    out = []
    for ds in (train, val):
        feats, labels = extract_features(backbone, eval_loader(ds, bs, workers), device)
        if len(feats) == 0:
            raise DataError("no features extracted: the dataset is empty")
        out.append(TensorDataset(feats, labels))
    backbone.cpu()
    return out[0], out[1]


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: list) -> pl.Trainer:
    logger = CSVLogger(save_dir=str(run_dir), name="logs")
    return pl.Trainer(**trainer_kwargs(trainer_section(cfg), run_dir, callbacks, logger))


def write_subset_list(subset: Subset, root: str, path: Path) -> None:
    """The files of a training subset, one path relative to ``root`` per line (a valid subset
    file); sample indices for datasets without files."""
    images = getattr(subset.dataset, "images", None)
    if images is None:
        lines = [str(i) for i in subset.indices]
    else:
        lines = [Path(os.path.relpath(images.paths[i], root)).as_posix() for i in subset.indices]
    path.write_text("\n".join(lines) + "\n")


def final_metrics(trainer: pl.Trainer, model: LinearModel, val_loader) -> dict[str, float]:
    """The validation of the last epoch, or a fresh one when the last epoch was not validated
    (``check_val_every_n_epoch``)."""
    if model.last_val is not None and model.last_val[0] == int(model.cfg.max_epochs) - 1:
        return model.last_val[1]
    return {k: float(v) for k, v in trainer.validate(model, val_loader, verbose=False)[0].items()}


#: the run version chosen by local rank 0, inherited by the processes Lightning's DDP launcher
#: starts for the other local ranks, so that all ranks share one run folder
VERSION_ENV = "SOLO_MIXMASK_EVAL_VERSION"


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _run_dir(cfg: DictConfig, kind: str) -> tuple[Path, str, Optional[Path]]:
    """The run's folder (a resumed run's own, or a new version), its version and checkpoint."""
    root = Path(cfg.checkpoint.dir) / kind
    resume = None
    if bool(cfg.auto_resume.enabled):
        resume = find_resumable(cfg, root, float(cfg.auto_resume.max_hours))
    if resume is not None:
        run_dir, version = resume.parent, resume.parent.name
    else:
        inherited = os.environ.get(VERSION_ENV) if _local_rank() > 0 else None
        version = inherited or new_version(root)
        run_dir = root / version
    os.environ[VERSION_ENV] = version
    return run_dir, version, resume


def settings_of(cfg: DictConfig) -> dict[str, Any]:
    """The evaluation settings a record keeps next to its numbers."""
    return {
        "protocol": ("wmse-probe" if cfg.features.probe == "wmse" else "precomputed-features")
        if cfg.features.precompute else ("finetune" if cfg.finetune else "frozen"),
        "max_epochs": int(cfg.max_epochs),
        "optimizer": str(cfg.optimizer.name),
        "batch_size": int(cfg.optimizer.batch_size),
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.weight_decay),
        "scheduler": str(cfg.scheduler.name),
        "crop_size": int(cfg.data.augmentations.crop_size),
        "train_path": str(Path(cfg.data.train_path).resolve()),
        "val_path": str(Path(cfg.data.val_path).resolve()),
    }


def _record(cfg: DictConfig, kind: str, metrics: dict[str, float], num_train: int,
            info: dict[str, Any], run_dir: Path, command: Optional[str],
            extra_settings: Optional[Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    """The evaluation's record: its numbers, settings and the pretrained checkpoint's provenance."""
    settings = {**settings_of(cfg), "num_train": num_train,
                **(extra_settings() if extra_settings else {})}
    record = make_record(kind, metrics, checkpoint=cfg.pretrained_feature_extractor,
                         dataset=cfg.data.dataset, settings=settings, info=info,
                         overrides={"method": cfg.pretrain_method,
                                    "variant": cfg.pretrain_variant,
                                    "epochs": cfg.pretrain_epochs}, command=command)
    record["eval_run_dir"] = str(run_dir.resolve())
    return record


def _wmse_probe(cfg: DictConfig, kind: str, train: TensorDataset, val: TensorDataset,
                num_classes: int, info: dict[str, Any], run_dir: Path, command: Optional[str],
                extra_settings: Optional[Callable[[], dict[str, Any]]]) -> EvalResult:
    """W-MSE's probe on the precomputed features (``feature_probe.py``); one process."""
    result = train_feature_probe(*train.tensors, *val.tensors, num_classes,
                                 epochs=int(cfg.max_epochs), lr=float(cfg.optimizer.lr),
                                 lr_end=max(float(cfg.scheduler.min_lr), 1e-12),
                                 weight_decay=float(cfg.optimizer.weight_decay),
                                 batch_size=int(cfg.optimizer.batch_size), seed=int(cfg.seed),
                                 device=_accelerator_device(cfg))
    metrics = {"acc1": result["acc1"], "acc5": result["acc5"], "loss": result["loss"]}
    record = _record(cfg, kind, metrics, len(train), info, run_dir, command, extra_settings)
    return EvalResult(metrics, run_dir, write_record(record, cfg.results_dir), record, None)


def run_linear(cfg: DictConfig, kind: str = "linear",
               select_train: Optional[Callable[[Dataset, Dataset], Sequence[int]]] = None,
               extra_settings: Optional[Callable[[], dict[str, Any]]] = None,
               command: Optional[str] = None,
               schema: Optional[type] = LinearConfig) -> EvalResult:
    """Parses ``cfg`` against ``schema`` (None: already parsed), trains the classifier, validates
    it, writes the run and its record.

    ``select_train(train, val)`` may restrict training to some sample indices (the
    semi-supervised subsets; the chosen files are listed in the run's ``train_subset.txt``), and
    ``extra_settings()`` adds to the record's settings.
    Everything that can fail on bad input runs before the run directory is created.
    """
    if schema is not None:
        cfg = parse_linear_cfg(cfg, schema)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    backbone, info = load_pretrained(cfg)
    train, val, num_classes = build_datasets(cfg, augment=not cfg.features.precompute)
    if select_train is not None:
        train = Subset(train, [int(i) for i in select_train(train, val)])
    run_dir, version, resume = _run_dir(cfg, kind)
    folder = RunFolder(run_dir, cfg, primary=_local_rank() == 0,
                       what=f"checkpoint.dir={cfg.checkpoint.dir}")
    with folder:
        if isinstance(train, Subset) and _local_rank() == 0:
            write_subset_list(train, str(cfg.data.train_path), run_dir / "train_subset.txt")
        features_dim = int(backbone.num_features)
        model_backbone: Optional[nn.Module] = backbone
        if cfg.features.precompute:
            train, val = precompute(backbone, train, val, cfg)
            model_backbone = None
        if cfg.features.probe == "wmse":
            return _wmse_probe(cfg, kind, train, val, num_classes, info, run_dir, command,
                               extra_settings)
        model = LinearModel(model_backbone, features_dim, num_classes, cfg)
        workers, bs = int(cfg.data.num_workers), int(cfg.optimizer.batch_size)
        gpu = _accelerator_device(cfg).type == "cuda"
        loader_workers = 0 if cfg.features.precompute else workers
        train_loader = eval_loader(train, bs, loader_workers, shuffle=True, pin_memory=gpu,
                                   drop_last=len(train) > bs)
        val_loader = eval_loader(val, bs, loader_workers, pin_memory=gpu)

        callbacks: list = []
        if bool(cfg.checkpoint.enabled):
            callbacks.append(Checkpointer(run_dir, str(cfg.name), version,
                                          int(cfg.checkpoint.frequency),
                                          bool(cfg.checkpoint.keep_prev)))
        trainer = _trainer(cfg, run_dir, callbacks)
        folder.steps = lambda: int(trainer.global_step)
        with frozen_modules_in_eval_mode():
            trainer.fit(model, train_loader, val_loader,
                        ckpt_path=str(resume) if resume else None)
        final = final_metrics(trainer, model, val_loader)
        metrics = {"acc1": final["val_acc1"], "acc5": final["val_acc5"], "loss": final["val_loss"]}
        record = _record(cfg, kind, metrics, len(train), info, run_dir, command, extra_settings)
        path = write_record(record, cfg.results_dir) if trainer.is_global_zero else None
        last = next((cb.last for cb in callbacks if isinstance(cb, Checkpointer)), None)
    return EvalResult(metrics, run_dir, path, record, last)
