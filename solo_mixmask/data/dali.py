"""Pretraining batches from NVIDIA DALI (``data.format: dali``).

The pipeline reads the ImageFolder tree that the torchvision path reads (the same ``scan_image_folder``
order, so an index means the same image on both paths), decodes on the GPU (``mixed``) when one is
used and on the CPU otherwise, and applies each ``augmentations`` recipe ``num_crops`` times. Batches
have the torchvision path's format, ``[indexes, [crop_1..crop_n], targets]``.

The reader gets every file with its dataset index as its label, so a batch carries the real indexes
and the targets are looked up from them. Files are sharded over the ranks of a DDP run, and the whole
list is reshuffled after every epoch with the same order on every rank, so each image is seen once per
epoch over all ranks. The last partial batch is dropped and every rank yields the same number of
batches (a DDP run must take the same number of steps everywhere).

The recipe follows the torchvision path op by op: random resized crop (bicubic, antialiased), colour
jitter, grayscale, Gaussian blur, solarization, equalization, flip, normalisation. Differences: the
four jitter adjustments run in a fixed order (brightness, contrast, saturation, hue) where torchvision
shuffles them — the first three commute up to clipping, so only clipping and the position of the hue
step differ — and grey is DALI's luma (weights 0.299/0.587/0.114 against torchvision's 0.2989). The
hue shift is the same HSV rotation as torchvision's (not DALI's linear ``hue`` approximation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from ..config.loading import select
from ..errors import ConfigError, DataError
from .datasets import ImageList, fraction_indices, scan_image_folder
from .loaders import check_images
from .recipe import blur_kernel, dataset_stats

DALI_MISSING = "data.format=dali needs NVIDIA DALI: pip install 'solo-mixmask[dali]'"


def import_dali() -> Any:
    """The ``nvidia.dali`` package, or a one-line ConfigError naming the ``dali`` extra."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401
        import nvidia.dali.math  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
        import nvidia.dali.types  # noqa: F401
    except ImportError:
        raise ConfigError(DALI_MISSING) from None
    return dali


def dali_available() -> bool:
    try:
        import_dali()
    except ConfigError:
        return False
    return True


# --------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class CropRecipe:
    """The fields of one ``augmentations`` entry that the pipeline needs."""

    size: int
    num_crops: int
    rrc: bool
    scale: tuple[float, float]
    interpolation: str
    jitter_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    gray_prob: float
    blur_prob: float
    sigma: tuple[float, float]
    solarize_prob: float
    equalize_prob: float
    flip_prob: float

    @classmethod
    def from_cfg(cls, aug: DictConfig) -> CropRecipe:
        def f(key: str, default: float) -> float:
            return float(select(aug, key, default))

        return cls(
            size=int(aug.crop_size), num_crops=int(select(aug, "num_crops", 1)),
            rrc=bool(select(aug, "rrc.enabled", True)),
            scale=(f("rrc.crop_min_scale", 0.08), f("rrc.crop_max_scale", 1.0)),
            interpolation=str(select(aug, "rrc.interpolation", "bicubic")),
            jitter_prob=f("color_jitter.prob", 0.0), brightness=f("color_jitter.brightness", 0.4),
            contrast=f("color_jitter.contrast", 0.4), saturation=f("color_jitter.saturation", 0.2),
            hue=f("color_jitter.hue", 0.1), gray_prob=f("grayscale.prob", 0.0),
            blur_prob=f("gaussian_blur.prob", 0.0),
            sigma=(f("gaussian_blur.sigma_min", 0.1), f("gaussian_blur.sigma_max", 2.0)),
            solarize_prob=f("solarization.prob", 0.0), equalize_prob=f("equalization.prob", 0.0),
            flip_prob=f("horizontal_flip.prob", 0.0),
        )


def _hsv_hue_shift(x: Any, shift: Any, dmath: Any) -> Any:
    """torchvision's HSV hue shift on float HWC pixels in [0, 255]; ``shift`` in turns.

    Channel ``n`` of the result is ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``v`` the max,
    ``c`` the chroma and ``k = (n + h6 + 6 * shift) mod 6`` (``h6``: the hue in sextants).
    """
    r, g, b = x[:, :, 0:1], x[:, :, 1:2], x[:, :, 2:3]
    v = dmath.max(dmath.max(r, g), b)
    c = v - dmath.min(dmath.min(r, g), b)
    is_r = r == v
    is_g = (g == v) & (r != v)
    is_b = (r != v) & (g != v)
    inv_c = 1.0 / dmath.max(c, 1e-6)
    h6 = (is_r * (g - b) + is_g * (2.0 * c + b - r) + is_b * (4.0 * c + r - g)) * inv_c
    h6 = h6 + shift * 6.0

    def channel(n: float) -> Any:
        k = h6 + (n + 12.0)  # h6 > -5, so k > 0 before the modulo
        k = k - dmath.floor(k * (1.0 / 6.0)) * 6.0
        return v - c * dmath.clamp(dmath.min(k, 4.0 - k), 0.0, 1.0)

    from nvidia.dali import fn

    return fn.cat(channel(5.0), channel(3.0), channel(1.0), axis=2)


def _gray(x: Any) -> Any:
    """uint8 luma, 1 channel."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    return fn.color_space_conversion(x, image_type=types.RGB, output_type=types.GRAY)


def _jitter(x: Any, r: CropRecipe, device: str) -> Any:
    """Brightness, contrast (around the mean grey), saturation (towards grey), then the HSV hue
    shift, on uint8 pixels (each step saturates back to uint8, as torchvision's do)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    def factor(value: float) -> Any:
        return fn.random.uniform(range=(max(0.0, 1 - value), 1 + value))

    if r.brightness > 0:
        x = fn.brightness(x, brightness=factor(r.brightness))
    if r.contrast > 0:
        f = factor(r.contrast)
        mean = fn.reductions.mean(_gray(x))
        if device == "gpu":  # a per-sample argument must live on the CPU: blend by arithmetic
            y = fn.cast(x, dtype=types.FLOAT) * f.gpu() + mean * (1.0 - f.gpu())
            x = fn.cast(dmath.clamp(y, 0.0, 255.0), dtype=types.UINT8)
        else:
            x = fn.contrast(x, contrast=f, contrast_center=mean)
    if r.saturation > 0:
        x = fn.saturation(x, saturation=factor(r.saturation))
    if r.hue > 0:
        shift = fn.random.uniform(range=(-r.hue, r.hue))
        y = _hsv_hue_shift(fn.cast(x, dtype=types.FLOAT),
                           shift.gpu() if device == "gpu" else shift, dmath)
        x = fn.cast(y, dtype=types.UINT8)
    return x


def _maybe(x: Any, p: float, op: Any) -> Any:
    """``op(x)`` for a random ``p`` share of the samples (a DALI conditional)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    if fn.random.coin_flip(probability=p, dtype=types.BOOL):
        x = op(x)
    return x


def _crop(images: Any, r: CropRecipe, mean: Sequence[float], std: Sequence[float],
          device: str) -> Any:
    """One crop of recipe ``r`` for every image of the batch (called inside the pipeline graph).
    Pixels stay uint8 until the final normalisation."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    def gray3(x: Any) -> Any:
        g = _gray(x)
        return fn.cat(g, g, g, axis=2)

    def blur(x: Any) -> Any:
        return fn.gaussian_blur(x, window_size=blur_kernel(r.size),
                                sigma=fn.random.uniform(range=r.sigma))

    def solarize(x: Any) -> Any:
        return fn.cast(x + (x >= 128) * (255 - 2 * x), dtype=types.UINT8)

    if r.rrc:
        x = fn.random_resized_crop(images, size=(r.size, r.size), random_area=r.scale,
                                   random_aspect_ratio=(3 / 4, 4 / 3), num_attempts=10,
                                   interp_type=types.INTERP_CUBIC if r.interpolation == "bicubic"
                                   else types.INTERP_LINEAR, antialias=True)
    else:
        x = fn.resize(images, resize_shorter=r.size, interp_type=types.INTERP_CUBIC,
                      antialias=True)
        x = fn.crop(x, crop=(r.size, r.size))
    for p, op in ((r.jitter_prob, lambda x: _jitter(x, r, device)), (r.gray_prob, gray3),
                  (r.blur_prob, blur), (r.solarize_prob, solarize),
                  (r.equalize_prob, fn.equalize)):
        if p > 0:
            x = _maybe(x, p, op)
    mirror = fn.random.coin_flip(probability=r.flip_prob) if r.flip_prob > 0 else 0
    return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mirror=mirror,
                                    mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


def build_pipeline(files: Sequence[str], labels: Sequence[int], recipes: Sequence[CropRecipe],
                   mean: Sequence[float], std: Sequence[float], batch_size: int, device: str,
                   num_threads: int, seed: int, shard_id: int = 0, num_shards: int = 1,
                   device_id: Optional[int] = None, prefetch: int = 2) -> Any:
    """A built DALI pipeline returning each crop (CHW float) and the reader label (the index)."""
    import_dali()
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(enable_conditionals=True)
    def pretrain_pipeline():
        jpegs, labels_ = fn.readers.file(files=list(files), labels=list(labels), name="Reader",
                                         shard_id=shard_id, num_shards=num_shards,
                                         shuffle_after_epoch=True, pad_last_batch=True)
        if device == "gpu":
            images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        crops = [_crop(images, r, mean, std, device) for r in recipes for _ in range(r.num_crops)]
        return (*crops, labels_)

    pipe = pretrain_pipeline(batch_size=batch_size, num_threads=num_threads,
                             device_id=device_id if device == "gpu" else None, seed=seed,
                             prefetch_queue_depth=prefetch)
    pipe.build()
    return pipe


# --------------------------------------------------------------------------------------- sharding
def shard_of(num_nodes: int = 1) -> tuple[int, int]:
    """(rank, world size): torch.distributed when initialised, else the launcher's environment
    (``RANK``/``WORLD_SIZE``, or Lightning's ``NODE_RANK``/``LOCAL_RANK``), else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), world
    local = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = max(1, world // max(1, num_nodes))
    return int(os.environ.get("NODE_RANK", "0")) * per_node + local, world


def shard_range(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """The reader's split of ``n`` files: shard i holds ``[n*i//S, n*(i+1)//S)``."""
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards


# ----------------------------------------------------------------------------------------- loader
class DALIPretrainLoader:
    """An iterable of pretraining batches with a length, for Lightning's ``fit``.

    The pipeline is built on the first iteration, once the process knows its rank (Lightning starts
    DDP ranks after the loaders exist). Not a ``DataLoader``, so Lightning never swaps its sampler.
    """

    def __init__(self, images: ImageList, indexes: Sequence[int], recipes: Sequence[CropRecipe],
                 mean: Sequence[float], std: Sequence[float], batch_size: int, device: str = "cpu",
                 num_threads: int = 2, seed: int = 0, shard: Optional[tuple[int, int]] = None,
                 num_nodes: int = 1, prefetch: int = 2) -> None:
        import_dali()
        self.images = images
        self.indexes = np.asarray(indexes, dtype=np.int64)
        self.targets = torch.as_tensor(images.targets, dtype=torch.long)
        self.recipes = list(recipes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = int(batch_size)
        self.device = device
        self.num_threads = max(1, int(num_threads))
        self.seed = int(seed)
        self.fixed_shard = shard
        self.num_nodes = num_nodes
        self.prefetch = prefetch
        self._iter: Any = None
        self._shard: Optional[tuple[int, int]] = None
        self._builds = 0  # pipelines built so far: seeds the file order and the augmentations
        self._mid_epoch = False

    @property
    def num_crops(self) -> int:
        return sum(r.num_crops for r in self.recipes)

    def shard(self) -> tuple[int, int]:
        return self.fixed_shard or shard_of(self.num_nodes)

    def __len__(self) -> int:
        _, world = self.shard()
        smallest = len(self.indexes) // world  # the smallest shard of the reader's split
        return smallest // self.batch_size

    def _build(self) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        rank, world = self.shard()
        seed = self.seed + 7919 * self._builds
        # a seeded pre-shuffle, the same on every rank: the reader's first epoch is in list order
        # (later epochs are reshuffled by the reader itself)
        order = self.indexes[np.random.default_rng(seed).permutation(len(self.indexes))]
        files = [self.images.paths[i] for i in order]
        device_id = torch.cuda.current_device() if self.device == "gpu" else None
        pipe = build_pipeline(files, order.tolist(), self.recipes, self.mean, self.std,
                              self.batch_size, self.device, self.num_threads,
                              seed + 1000 * rank, rank, world, device_id, self.prefetch)
        names = [f"crop{i}" for i in range(self.num_crops)] + ["index"]
        self._shard = (rank, world)
        self._builds += 1
        return DALIGenericIterator([pipe], names, reader_name="Reader", auto_reset=True,
                                   last_batch_policy=LastBatchPolicy.DROP)

    def __iter__(self) -> Iterator[list[Any]]:
        # DALI cannot restart mid-epoch: after an abandoned epoch (``limit_train_batches``, an
        # exception) the pipeline is rebuilt, with fresh seeds
        if self._iter is None or self._mid_epoch or self._shard != self.shard():
            self._iter = self._build()
        steps = len(self)
        self._mid_epoch = True
        for step, out in enumerate(self._iter):
            if step >= steps:  # a larger shard's extra batch: drain the epoch, yield nothing
                continue
            data = out[0]
            index = data["index"].view(-1).long()
            targets = self.targets[index.cpu()].to(index.device)
            yield [index, [data[f"crop{i}"] for i in range(self.num_crops)], targets]
        self._mid_epoch = False


def resolve_device(cfg: DictConfig, gpu: bool) -> str:
    """``dali.device``: ``auto`` decodes on the GPU when training uses one, ``gpu``/``cpu`` force."""
    want = str(select(cfg, "dali.device", "auto")).lower()
    if want not in ("auto", "gpu", "cpu"):
        raise ConfigError(f"dali.device={want!r}: use 'auto', 'gpu' or 'cpu'")
    if want == "gpu" and not torch.cuda.is_available():
        raise ConfigError("dali.device=gpu needs a CUDA GPU; use dali.device=cpu or auto")
    if want == "auto":
        return "gpu" if gpu and torch.cuda.is_available() else "cpu"
    return want


def build_dali_pretrain_loader(cfg: DictConfig, gpu: bool) -> DALIPretrainLoader:
    """The ``data.format: dali`` training loader of a parsed pretraining config."""
    import_dali()
    device = resolve_device(cfg, gpu)
    images = scan_image_folder(cfg.data.train_path, no_labels=bool(cfg.data.no_labels))
    checked = check_images(images, str(cfg.data.train_path),
                           str(select(cfg, "data.verify", "quick")),
                           bool(select(cfg, "data.skip_corrupt", False)))
    good = set(checked.paths)
    keep = np.array([i for i, p in enumerate(images.paths) if p in good], dtype=np.int64)
    fraction = float(cfg.data.fraction)
    if 0 < fraction < 1:
        keep = keep[fraction_indices([images.targets[i] for i in keep], fraction,
                                     seed=int(cfg.seed))]
    batch = int(cfg.optimizer.batch_size)
    if len(keep) < batch:
        raise DataError(f"{cfg.data.train_path} has {len(keep)} images, fewer than one batch "
                        f"(optimizer.batch_size={batch})")
    recipes = [CropRecipe.from_cfg(a) for a in cfg.augmentations]
    mean, std = dataset_stats(cfg)
    threads = select(cfg, "dali.threads") or max(1, int(cfg.data.num_workers))
    return DALIPretrainLoader(images, keep, recipes, mean, std, batch, device=device,
                              num_threads=int(threads), seed=int(cfg.seed),
                              num_nodes=int(select(cfg, "num_nodes", 1)))
