"""The pretraining schema: every key a pretraining config may hold, its type, range and default.

Sections shared with the evaluation schemas (backbone, checkpointing, the Lightning keys) are
defined here and reused by ``eval_schema.py``. Keys of solo-learn that this engine does not use are
accepted so its configs load (``solo_keys.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ..errors import ConfigError
from .validation import (
    SEED_MAX,
    check_auto_or_bool,
    check_devices,
    check_dir_path,
    check_limit,
    check_precision,
    check_verify,
    opt,
    sub,
)


# -------------------------------------------------------------------------------- augmentations
@dataclass
class RRCConfig:
    enabled: bool = True
    crop_min_scale: float = opt(0.08, gt=0, le=1)
    crop_max_scale: float = opt(1.0, gt=0, le=1)
    interpolation: str = opt("bicubic", choices=("bicubic", "bilinear"))


@dataclass
class ColorJitterConfig:
    prob: float = opt(0.0, ge=0, le=1)
    brightness: float = opt(0.4, ge=0)
    contrast: float = opt(0.4, ge=0)
    saturation: float = opt(0.2, ge=0)
    hue: float = opt(0.1, ge=0, le=0.5)


@dataclass
class ProbConfig:
    prob: float = opt(0.0, ge=0, le=1)


@dataclass
class BlurConfig:
    prob: float = opt(0.0, ge=0, le=1)
    sigma_min: float = opt(0.1, gt=0)
    sigma_max: float = opt(2.0, gt=0)


@dataclass
class AugmentationConfig:
    """One crop recipe of the ``augmentations`` list (solo-learn's keys)."""

    crop_size: int = opt(ge=8, le=1024)
    num_crops: int = opt(1, ge=1)
    rrc: RRCConfig = sub(RRCConfig)
    color_jitter: ColorJitterConfig = sub(ColorJitterConfig)
    grayscale: ProbConfig = sub(ProbConfig)
    gaussian_blur: BlurConfig = sub(BlurConfig)
    solarization: ProbConfig = sub(ProbConfig)
    equalization: ProbConfig = sub(ProbConfig)
    horizontal_flip: ProbConfig = sub(ProbConfig)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


# ----------------------------------------------------------------------------- shared sections
@dataclass
class BackboneConfig:
    name: Optional[str] = MISSING
    kwargs: Dict[str, Any] = opt(factory=dict)


@dataclass
class CheckpointConfig:
    enabled: bool = True
    dir: str = opt("trained_models", check=check_dir_path)
    frequency: int = opt(1, ge=1)
    keep_prev: bool = False


@dataclass
class AutoResumeConfig:
    enabled: bool = False
    max_hours: float = opt(36, ge=0)


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "solo-mixmask"
    entity: Optional[str] = None
    offline: bool = False


@dataclass
class TensorboardConfig:
    enabled: bool = False


@dataclass
class LightningKeys:
    """Top-level Trainer keys (solo-learn's) shared by pretraining and evaluation."""

    max_epochs: int = opt(100, ge=1)
    devices: Any = opt("auto", check=check_devices)
    num_nodes: int = opt(1, ge=1)
    accelerator: str = opt("auto", choices=("auto", "cpu", "gpu", "cuda"))
    strategy: Optional[str] = opt("auto", choices=("auto", "ddp", "ddp_spawn", "ddp_notebook",
                                                    "ddp_find_unused_parameters_true", "fsdp",
                                                    "deepspeed", None))
    precision: Any = opt("auto", check=check_precision)
    sync_batchnorm: bool = False
    accumulate_grad_batches: int = opt(1, ge=1)
    seed: int = opt(5, ge=0, le=SEED_MAX)
    enable_progress_bar: bool = True
    # passed to Lightning's Trainer as they are (None: Lightning's default)
    limit_train_batches: Any = opt(None, check=check_limit)
    limit_val_batches: Any = opt(None, check=check_limit)
    log_every_n_steps: Optional[int] = opt(None, ge=1)
    check_val_every_n_epoch: Optional[int] = opt(None, ge=1)
    num_sanity_val_steps: Optional[int] = opt(None, ge=-1)
    deterministic: Optional[bool] = None
    benchmark: Optional[bool] = None
    gradient_clip_val: Optional[float] = opt(None, ge=0)
    enable_model_summary: Optional[bool] = None
    max_steps: Optional[int] = opt(None, ge=-1)
    val_check_interval: Any = opt(None, check=check_limit)


#: Lightning Trainer arguments taken from the top level of a config when set
TRAINER_PASSTHROUGH = ("limit_train_batches", "limit_val_batches", "log_every_n_steps",
                       "check_val_every_n_epoch", "num_sanity_val_steps", "deterministic",
                       "benchmark", "gradient_clip_val", "enable_progress_bar",
                       "enable_model_summary", "max_steps", "val_check_interval")


def trainer_section(cfg: DictConfig) -> LightningKeys:
    """The Trainer's section of a validated config, as one typed object.

    solo-learn's layout keeps the Trainer keys at the top level beside the other sections, so this
    collects them; the engine's Trainer builder takes the object and never the whole config.
    """
    values = {f.name: cfg[f.name] for f in fields(LightningKeys)}
    if OmegaConf.is_list(values["devices"]):
        values["devices"] = OmegaConf.to_container(values["devices"])
    return LightningKeys(**values)


# --------------------------------------------------------------------------------- optimizers
def check_betas(value: Any, key: str) -> None:
    if len(value) != 2 or not all(0 <= float(b) < 1 for b in value):
        raise ConfigError(f"{key}={list(value)}: use two numbers in [0, 1)")


@dataclass
class SGDKwargs:
    """``optimizer.kwargs`` of sgd. Momentum defaults to 0.9, not torch's 0: every recipe here and
    solo-learn's own set it, so a config that leaves it out still trains like them."""

    momentum: float = opt(0.9, ge=0, lt=1)
    dampening: float = opt(0.0, ge=0, le=1)
    nesterov: bool = False


@dataclass
class LARSKwargs(SGDKwargs):
    """``optimizer.kwargs`` of lars, in solo-learn's names (timm's ``trust_coeff``, ``trust_clip``)."""

    eta: float = opt(1e-3, gt=0)
    clip_lr: bool = False
    exclude_bias_n_norm: bool = False  # biases and norms skip weight decay and adaptation


@dataclass
class AdamKwargs:
    """``optimizer.kwargs`` of adam and adamw."""

    betas: List[float] = opt(factory=lambda: [0.9, 0.999], check=check_betas)
    eps: float = opt(1e-8, gt=0)
    amsgrad: bool = False


#: each optimizer's ``kwargs`` schema (the names ``optimizer.name`` takes)
OPTIMIZER_KWARGS: Dict[str, type] = {"sgd": SGDKwargs, "lars": LARSKwargs, "adam": AdamKwargs,
                                     "adamw": AdamKwargs}
OPTIMIZERS = tuple(OPTIMIZER_KWARGS)


# --------------------------------------------------------------------------------- pretraining


def check_optimizer_name(value: Any, key: str) -> None:
    if str(value).lower() not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {value!r}: choose one of {list(OPTIMIZERS)}")


@dataclass
class DeviceDataConfig:
    """``data.format: device``: images decoded once and held on the training device."""

    size: Optional[int] = opt(None, ge=8)  # resize + centre-crop every image to this square
    max_bytes: int = opt(4_000_000_000, ge=1)  # refuse datasets larger than this on the device
    cache_dir: Optional[str] = opt(None, check=check_dir_path)  # default ~/.cache/solo-mixmask
    decode_workers: Optional[int] = opt(None, ge=1)


@dataclass
class ImageChecksConfig:
    """How a data folder's images are checked before a run reads them (``verify``: ``quick``,
    ``full`` or ``none``) and whether unreadable ones are left out (``skip_corrupt``), in
    pretraining and evaluation alike (``data/sources.py``)."""

    skip_corrupt: bool = False
    verify: Any = opt("quick", check=check_verify)


@dataclass
class DataConfig(ImageChecksConfig):
    dataset: str = MISSING
    train_path: str = MISSING
    val_path: Optional[str] = None
    format: str = opt("image_folder", choices=("image_folder", "dali", "device"))
    device: DeviceDataConfig = sub(DeviceDataConfig)
    num_workers: int = opt(4, ge=0)
    no_labels: bool = False
    fraction: float = -1.0
    download: bool = False
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    # derived (filled by the parser; a parsed config such as args.json carries them)
    num_classes: Optional[int] = opt(None, ge=1)
    num_large_crops: Optional[int] = None
    num_small_crops: Optional[int] = None


@dataclass
class OptimizerBase:
    """What pretraining's and evaluation's ``optimizer`` sections share."""

    name: str = opt(check=check_optimizer_name)
    batch_size: int = opt(ge=1)
    weight_decay: float = opt(0.0, ge=0)
    kwargs: Dict[str, Any] = opt(factory=dict)  # validated against OPTIMIZER_KWARGS[name]
    exclude_bias_n_norm_wd: bool = False
    # true: lrs are per 256 images and scaled by the total batch (solo-learn); false: as given
    scale_lr: bool = True
    lr_scale: Optional[float] = None  # derived: the factor applied to the lrs


@dataclass
class OptimizerConfig(OptimizerBase):
    lr: float = opt(ge=0)
    classifier_lr: float = opt(0.1, ge=0)


@dataclass
class SchedulerConfig:
    name: str = opt("warmup_cosine", choices=("warmup_cosine", "cosine", "step", "none"))
    warmup_epochs: float = opt(10, ge=0)
    warmup_start_lr: float = opt(3e-5, ge=0)
    min_lr: float = opt(0.0, ge=0)
    lr_decay_steps: Optional[List[float]] = None  # epochs; negative: counted from the end
    gamma: float = opt(0.1, gt=0)
    interval: str = opt("step", choices=("step", "epoch"))
    warmup_steps: int = opt(0, ge=0)  # a linear warm-up over iterations, on top of any schedule


@dataclass
class MomentumConfig:
    base_tau: float = opt(0.99, ge=0, le=1)
    final_tau: float = opt(1.0, ge=0, le=1)
    classifier: bool = False  # solo-learn's momentum classifier: not implemented here


@dataclass
class KNNEvalConfig:
    enabled: bool = False
    k: int = opt(20, ge=1)
    T: float = opt(0.07, gt=0)
    distance_func: str = opt("euclidean", choices=("euclidean", "cosine"))
    bank: str = opt("crops", choices=("crops", "clean"))
    frequency: int = opt(1, ge=1)
    # what is compared: the backbone's pooled features, or the projection head's output (Un-Mix's
    # CIFAR MoCo monitor)
    feature: str = opt("backbone", choices=("backbone", "projector"))
    # weighted (InstDisc / solo-learn) or an unweighted majority of the k neighbours (W-MSE)
    vote: str = opt("weighted", choices=("weighted", "majority"))


@dataclass
class PerformanceConfig:
    channels_last: Any = opt("auto", check=check_auto_or_bool)
    compile: bool = False
    #: data.format=device: compile the batched recipe (torch.compile, fullgraph), after one eager batch
    compile_augmentations: bool = False
    #: data.format=device: make batch b+1's crops on a second CUDA stream while batch b trains
    augment_ahead: bool = False
    pin_memory: Any = opt("auto", check=check_auto_or_bool)
    persistent_workers: bool = True
    prefetch_factor: int = opt(2, ge=1)
    disable_channel_last: bool = False  # solo-learn's spelling: true turns channels_last off


@dataclass
class DaliConfig:
    device: str = opt("auto", choices=("auto", "gpu", "cpu"))
    threads: Optional[int] = opt(None, ge=1)
    encode_indexes_into_labels: bool = False  # solo-learn's; indexes always travel here


@dataclass
class AutoUMAPConfig:  # solo-learn's UMAP plots: not produced by this engine
    enabled: bool = False
    dir: str = "auto_umap"
    frequency: int = 1


@dataclass
class PretrainConfig(LightningKeys):
    method: str = MISSING
    name: Optional[str] = None
    backbone: BackboneConfig = sub(BackboneConfig)
    method_kwargs: Any = opt(factory=dict)  # validated against the method's own schema
    data: DataConfig = sub(DataConfig)
    augmentations: List[AugmentationConfig] = opt(factory=list)
    optimizer: OptimizerConfig = sub(OptimizerConfig)
    scheduler: SchedulerConfig = sub(SchedulerConfig)
    momentum: MomentumConfig = sub(MomentumConfig)
    knn_eval: KNNEvalConfig = sub(KNNEvalConfig)
    checkpoint: CheckpointConfig = sub(CheckpointConfig)
    auto_resume: AutoResumeConfig = sub(AutoResumeConfig)
    wandb: WandbConfig = sub(WandbConfig)
    tensorboard: TensorboardConfig = sub(TensorboardConfig)
    performance: PerformanceConfig = sub(PerformanceConfig)
    dali: DaliConfig = sub(DaliConfig)
    resume_from_checkpoint: Optional[str] = None
    auto_umap: AutoUMAPConfig = sub(AutoUMAPConfig)
    debug_augmentations: bool = False
    wandb_run_id: Optional[str] = None
    # leftovers of solo-learn's older config layout, present in some of its configs and read by
    # nothing there either
    augmentations_cfg: Optional[str] = opt(None, ignored="solo-learn's configs name their "
                                           "augmentations in the defaults list")
    wandb_cfg: Optional[str] = opt(None, ignored="solo-learn's configs name wandb in the "
                                   "defaults list")
