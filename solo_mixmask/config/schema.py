"""Typed schemas of every config the command line accepts, and the one validator that applies them.

The schemas are OmegaConf structured configs (dataclasses): OmegaConf converts and type-checks the
values, and field metadata carries what it cannot express (allowed choices, numeric ranges, keys of
several types). ``validate(cfg, Schema)`` runs before anything is built or written and turns every
problem into a ``ConfigError`` naming the full key: an unknown key (with the closest known one), a
value of the wrong type or outside its range, a missing required key. The defaults of the dataclasses
are the engine's defaults: a validated config is complete.

Keys of solo-learn that this engine does not use are accepted (so its configs load) and reported with
one notice line each; see ``SOLO_LEARN_IGNORED``.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError

Check = Callable[[Any, str], None]


def opt(default: Any = MISSING, *, choices: Optional[tuple] = None, ge: Optional[float] = None,
        gt: Optional[float] = None, le: Optional[float] = None, lt: Optional[float] = None,
        check: Optional[Check] = None, factory: Optional[Callable[[], Any]] = None,
        ignored: Optional[str] = None) -> Any:
    """A schema field: its default (``MISSING``: required) and what a valid value looks like.
    ``ignored``: a key solo-learn's configs carry that this engine does not use (why); setting it
    prints one notice line."""
    meta = {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "check": check,
            "ignored": ignored}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def sub(cls: type) -> Any:
    """A nested section, filled with its defaults when the config leaves it out."""
    return field(default_factory=cls)


# ------------------------------------------------------------------------ values of several types
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_auto_or_bool(value: Any, key: str) -> None:
    if value != "auto" and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: use true, false or auto")


def check_auto_or_int(minimum: int) -> Check:
    def check(value: Any, key: str) -> None:
        if value == "auto":
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key}={value!r}: use auto or an integer of at least {minimum}")
    return check


def check_devices(value: Any, key: str) -> None:
    """Lightning's ``devices``: auto, a count, an id list or a comma string of ids."""
    if value in ("auto", -1, "-1"):
        return
    if isinstance(value, (list, ListConfig)):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in value):
            raise ConfigError(f"{key}={list(value)!r}: a device list holds ids such as [0, 1]")
        return
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            return
        raise ConfigError(f"{key}={value!r}: use auto, a count such as 2 or ids such as [0, 1]")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r}: use auto, a count such as 2 or ids such as [0, 1]")


PRECISIONS = ("auto", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "bf16-true",
              "16-true", "64", "64-true")


def check_precision(value: Any, key: str) -> None:
    if str(value) not in PRECISIONS:
        raise ConfigError(f"{key}={value!r}: choose one of {list(PRECISIONS)}")


def check_limit(value: Any, key: str) -> None:
    """Lightning's ``limit_*_batches``: a batch count, or a fraction of the epoch."""
    if value is None:
        return
    if isinstance(value, bool) or not _number(value):
        raise ConfigError(f"{key}={value!r}: use a number of batches or a fraction in (0, 1]")
    if isinstance(value, int) and value < 0 or isinstance(value, float) and not 0 <= value <= 1:
        raise ConfigError(f"{key}={value!r}: use a number of batches or a fraction in (0, 1]")


def check_ratio(value: Any, key: str) -> None:
    """MixMask's ratio: a number in (0, 1) or a pair [low, high] drawn uniformly per batch."""
    if isinstance(value, (list, tuple, ListConfig)):
        if len(value) != 2 or not all(_number(v) for v in value):
            raise ConfigError(f"{key} must be a number or a pair [low, high]")
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise ConfigError(f"{key}=[{lo}, {hi}]: the uniform bounds are reversed")
        if not (lo > 0 and hi < 1):
            raise ConfigError(f"{key}=[{lo}, {hi}] must lie inside (0, 1)")
        return
    if not _number(value):
        raise ConfigError(f"{key}={value!r} is not a number")
    if not 0 < float(value) < 1:
        raise ConfigError(f"{key}={value} must lie inside (0, 1)")


def check_verify(value: Any, key: str) -> None:
    if value not in ("none", "quick", "full") and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: use quick (every file opens and has an image "
                          "header), full (decode every image) or none")


def check_dir_path(value: Any, key: str) -> None:
    """A folder the run writes into: it may not exist yet, but it cannot be a file."""
    if value is not None and os.path.exists(str(value)) and not os.path.isdir(str(value)):
        raise ConfigError(f"{key}={value}: this is a file, not a folder")


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
    seed: int = 5
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


# --------------------------------------------------------------------------------- pretraining
OPTIMIZERS = ("sgd", "lars", "adam", "adamw")


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
class DataConfig:
    dataset: str = MISSING
    train_path: str = MISSING
    val_path: Optional[str] = None
    format: str = opt("image_folder", choices=("image_folder", "dali", "device"))
    device: DeviceDataConfig = sub(DeviceDataConfig)
    num_workers: int = opt(4, ge=0)
    no_labels: bool = False
    fraction: float = -1.0
    download: bool = False
    skip_corrupt: bool = False
    verify: Any = opt("quick", check=check_verify)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    # derived (filled by the parser; a parsed config such as args.json carries them)
    num_classes: Optional[int] = opt(None, ge=1)
    num_large_crops: Optional[int] = None
    num_small_crops: Optional[int] = None


@dataclass
class OptimizerConfig:
    name: str = opt(check=check_optimizer_name)
    batch_size: int = opt(ge=1)
    lr: float = opt(ge=0)
    classifier_lr: float = opt(0.1, ge=0)
    weight_decay: float = opt(0.0, ge=0)
    kwargs: Dict[str, Any] = opt(factory=dict)
    exclude_bias_n_norm_wd: bool = False
    # true: lrs are per 256 images and scaled by the total batch (solo-learn); false: as given
    scale_lr: bool = True
    lr_scale: Optional[float] = None  # derived: the factor applied to the lrs


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


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class EvalAugmentationConfig:
    crop_size: Optional[int] = opt(None, ge=8, le=1024)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


@dataclass
class EvalDataConfig:
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
class EvalOptimizerConfig:
    name: str = opt(check=check_optimizer_name)
    batch_size: int = opt(ge=1)
    lr: float = opt(gt=0)
    weight_decay: float = opt(0.0, ge=0)
    kwargs: Dict[str, Any] = opt(factory=dict)
    backbone_lr: Optional[float] = opt(None, ge=0)
    exclude_bias_n_norm_wd: bool = False
    scale_lr: bool = True
    lr_scale: Optional[float] = None


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
    seed: int = 0
    balance: str = opt("equal", choices=("equal", "proportional"))


@dataclass
class SemiConfig(LinearConfig):
    semi: SemiLabelsConfig = sub(SemiLabelsConfig)


# ------------------------------------------------------------------- solo-learn keys not used here
#: key -> (value that changes nothing, what to say)
SOLO_LEARN_IGNORED: dict[str, tuple[Any, str]] = {
    "auto_umap.enabled": (False, "UMAP plots are not produced by this engine"),
    "debug_augmentations": (False, "augmentation previews are not produced by this engine"),
    "dali.encode_indexes_into_labels": (False, "indexes always travel with DALI batches here"),
    "momentum.classifier": (False, "the momentum classifier is not implemented here"),
    "wandb_run_id": (None, "runs are resumed by checkpoint, not by W&B run id"),
}

#: solo-learn keys whose non-default value would change results: an error, not a notice
SOLO_LEARN_UNSUPPORTED: dict[str, Any] = {
    "auto_augment": False, "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
    "data.fraction": -1.0,
}


def report_ignored(cfg: DictConfig, given: DictConfig) -> None:
    """One notice line per solo-learn key that the config sets and this engine does not use."""
    for key, (neutral, why) in SOLO_LEARN_IGNORED.items():
        if OmegaConf.select(given, key, default=None) is None:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != neutral:
            print(f"notice: {key}={value} is ignored ({why})", file=sys.stderr)
    for key, neutral in SOLO_LEARN_UNSUPPORTED.items():
        value = OmegaConf.select(cfg, key, default=neutral, throw_on_missing=False)
        if value is not None and value != neutral:
            hint = ("train on a labelled fraction with `solo-mixmask semi` (semi.fraction)"
                    if key == "data.fraction" and "semi" not in cfg else "remove the key")
            raise ConfigError(f"{key}={value}: solo-learn's option is not supported by this "
                              f"engine; {hint}")


# ---------------------------------------------------------------------------------- validation
def _hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(obj if isinstance(obj, type) else type(obj))


def _list_item_schema(tp: Any) -> Optional[type]:
    """The dataclass of a ``List[SomeDataclass]`` annotation, else None."""
    if typing.get_origin(tp) in (list, List):
        (item,) = typing.get_args(tp) or (None,)
        return item if is_dataclass(item) else None
    return None


def closest(name: str, known: list[str], path: str = "") -> str:
    """`` (did you mean 'path.key'?)`` for the known key nearest to a misspelt one, else ''."""
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not match:  # a different case, or a longer or shorter spelling (probability / prob)
        low = name.lower()
        match = [k for k in known if k.lower() == low] or [
            k for k in known if len(k) >= 3 and (low.startswith(k.lower())
                                                 or k.lower().startswith(low))]
    return f" (did you mean '{_join(path, match[0])}'?)" if match else ""


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_keys(user: Any, schema: type, path: str) -> Any:
    """Unknown keys and wrong shapes, with full paths; list items of a schema type are merged here
    (OmegaConf loses the list index in its messages)."""
    if not isinstance(user, dict):
        where = path or "the config"
        raise ConfigError(f"{where} must be a mapping of keys, got {user!r}")
    hints = _hints(schema)
    known = [f.name for f in fields(schema)]
    out = dict(user)
    for key, value in user.items():
        full = _join(path, key)
        if key not in hints:
            raise ConfigError(f"unknown key '{full}'" + closest(str(key), known, path))
        tp = hints[key]
        nested = tp if is_dataclass(tp) else None
        if nested is not None and value is not None:
            out[key] = _check_keys(value, nested, full)
        item = _list_item_schema(tp)
        if item is not None and value is not None:
            if not isinstance(value, list):
                raise ConfigError(f"{full} must be a list of {item.__name__} entries, got "
                                  f"{value!r}")
            out[key] = [_merge(_check_keys(v, item, _join(full, i)), item, _join(full, i))
                        for i, v in enumerate(value)]
    return out


def _describe_type(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    for t, name in names.items():
        if tp is t or t in typing.get_args(tp):
            return name
    return getattr(tp, "__name__", str(tp))


def _field_type(schema: type, dotted: str) -> Any:
    """The annotation of a dotted key of ``schema`` (None when it is not a plain field path)."""
    tp: Any = schema
    for part in dotted.split(".") if dotted else []:
        if not is_dataclass(tp):
            return None
        tp = _hints(tp).get(part)
    return None if tp is schema else tp


@functools.cache
def _template(schema: type) -> DictConfig:
    """The schema as a structured config, built once (``OmegaConf.merge`` copies it)."""
    return OmegaConf.structured(schema)


def _merge(user: dict, schema: type, path: str) -> DictConfig:
    try:
        return OmegaConf.merge(_template(schema), user)
    except OmegaConfBaseException as exc:
        key = _join(path, exc.full_key) if getattr(exc, "full_key", None) else path
        tp = _field_type(schema, str(exc.full_key or ""))
        value = OmegaConf.select(OmegaConf.create(user), str(exc.full_key), default=None) \
            if exc.full_key else None
        expected = f"expected {_describe_type(tp)}" if tp is not None else \
            str(exc).splitlines()[0]
        shown = f"={value!r}" if value is not None else ""
        raise ConfigError(f"{key}{shown}: {expected}") from None


_BOUNDS = (("ge", "at least", lambda v, b: v >= b), ("gt", "greater than", lambda v, b: v > b),
           ("le", "at most", lambda v, b: v <= b), ("lt", "less than", lambda v, b: v < b))


def _check_range(number: float, meta: Any, key: str) -> None:
    if not math.isfinite(number):
        raise ConfigError(f"{key}={number}: must be a finite number")
    for bound, word, ok in _BOUNDS:
        limit = meta.get(bound)
        if limit is not None and not ok(number, limit):
            shown = int(number) if number.is_integer() else number
            raise ConfigError(f"{key}={shown}: must be {word} {limit}")


def _check_values(cfg: Any, schema: type, path: str) -> None:
    """Choices, ranges and the checks of keys that take several types, from field metadata."""
    hints = _hints(schema)
    for f in fields(schema):
        value = cfg.get(f.name)
        key = _join(path, f.name)
        tp = hints[f.name]
        if is_dataclass(tp) and value is not None:
            _check_values(value, tp, key)
            continue
        item = _list_item_schema(tp)
        if item is not None and value is not None:
            for i, v in enumerate(value):
                _check_values(v, item, _join(key, i))
            continue
        meta = f.metadata
        if value is None or not meta:
            continue
        if meta.get("ignored"):
            print(f"notice: {key}={value} is ignored ({meta['ignored']})", file=sys.stderr)
            continue
        if meta.get("check"):
            meta["check"](value, key)
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r}: choose one of {[c for c in choices if c]}")
        if _number(value):
            _check_range(float(value), meta, key)


def validate(cfg: Any, schema: type, path: str = "") -> DictConfig:
    """``cfg`` checked against ``schema`` and completed with its defaults (see the module
    docstring). Interpolations are resolved first; the result is an unlocked DictConfig."""
    try:
        node = cfg if isinstance(cfg, (DictConfig, ListConfig)) else OmegaConf.create(cfg or {})
        user = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot read the config: {str(exc).splitlines()[0]}") from None
    merged = _merge(_check_keys(user if user is not None else {}, schema, path), schema, path)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"missing required key '{_join(path, missing[0])}'")
    _check_values(merged, schema, path)
    OmegaConf.set_struct(merged, False)
    return merged


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a schema (documentation and tests)."""
    keys = []
    for f in fields(schema):
        tp = _hints(schema)[f.name]
        key = _join(prefix, f.name)
        if is_dataclass(tp):
            keys += schema_keys(tp, key)
        else:
            keys.append(key)
    return keys
