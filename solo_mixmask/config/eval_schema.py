"""The evaluation schemas: the linear probe (``LinearConfig``) and semi-supervised training
(``SemiConfig``), with their data, optimizer and schedule sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from omegaconf import MISSING

from .schema import (
    AutoResumeConfig,
    BackboneConfig,
    CheckpointConfig,
    ImageChecksConfig,
    LightningKeys,
    OptimizerBase,
    WandbConfig,
)
from .validation import SEED_MAX, check_dir_path, opt, sub


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class EvalAugmentationConfig:
    crop_size: Optional[int] = opt(None, ge=8, le=1024)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


@dataclass
class EvalDataConfig(ImageChecksConfig):
    dataset: str = MISSING
    train_path: str = MISSING
    val_path: str = MISSING
    # evaluation reads image folders (or torchvision's CIFAR/STL files): no DALI or device path
    format: str = opt("image_folder", choices=("image_folder",))
    num_workers: int = opt(4, ge=0)
    download: bool = False
    augmentations: EvalAugmentationConfig = sub(EvalAugmentationConfig)
    crop_size: Optional[int] = opt(None, ge=8, le=1024)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    num_classes: Optional[int] = opt(None, ge=1)
    fraction: float = -1.0  # solo-learn's labelled fraction: use ``solo-mixmask semi`` here


@dataclass
class EvalOptimizerConfig(OptimizerBase):
    lr: float = opt(gt=0)
    backbone_lr: Optional[float] = opt(None, ge=0)  # fine-tuning; None: lr


@dataclass
class EvalSchedulerConfig:
    name: str = opt("step", choices=("step", "cosine", "warmup_cosine", "none"))
    lr_decay_steps: List[float] = opt(factory=lambda: [60, 80])
    gamma: float = opt(0.1, gt=0)
    warmup_epochs: float = opt(0, ge=0)
    warmup_start_lr: float = opt(0.0, ge=0)
    min_lr: float = opt(0.0, ge=0)
    interval: str = opt("step", choices=("step", "epoch"))
    warmup_steps: int = opt(0, ge=0)


@dataclass
class FeaturesConfig:
    precompute: bool = False
    # lightning: the engine's probe (any optimizer and schedule) on the precomputed features;
    # wmse: W-MSE's probe (Adam, lr decayed exponentially to scheduler.min_lr over max_epochs)
    probe: str = opt("lightning", choices=("lightning", "wmse"))


@dataclass
class LinearConfig(LightningKeys):
    #: an unnamed run's name is ``<RUN_KIND>-<dataset>``
    RUN_KIND: ClassVar[str] = "linear"
    pretrained_feature_extractor: Optional[str] = None
    name: Optional[str] = None
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name=None))
    pretrain_method: Optional[str] = None
    pretrain_variant: Optional[str] = None
    pretrain_epochs: Optional[int] = None
    data: EvalDataConfig = sub(EvalDataConfig)
    optimizer: EvalOptimizerConfig = sub(EvalOptimizerConfig)
    scheduler: EvalSchedulerConfig = sub(EvalSchedulerConfig)
    finetune: bool = False
    features: FeaturesConfig = sub(FeaturesConfig)
    checkpoint: CheckpointConfig = sub(CheckpointConfig)
    auto_resume: AutoResumeConfig = sub(AutoResumeConfig)
    wandb: WandbConfig = sub(WandbConfig)
    results_dir: str = opt("results", check=check_dir_path)
    resume_from_checkpoint: Optional[str] = None
    # solo-learn's supervised extras: not implemented by this probe
    auto_augment: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0


@dataclass
class SemiLabelsConfig:
    fraction: float = opt(0.01, gt=0, le=1)
    subset_file: Optional[str] = None
    seed: int = opt(0, ge=0, le=SEED_MAX)
    balance: str = opt("equal", choices=("equal", "proportional"))


@dataclass
class SemiConfig(LinearConfig):
    RUN_KIND: ClassVar[str] = "semi"
    semi: SemiLabelsConfig = sub(SemiLabelsConfig)
