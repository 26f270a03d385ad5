"""The augmentation recipe, described once: a frozen value built from the validated config.

Every data path (the DataLoader workers, the device-resident batches, DALI, the benchmarks) takes a
:class:`Recipe`; none of them reads an augmentation key of the config. The schema
(``config/schema.py``, ``AugmentationConfig``) is the only place a default lives, so
:meth:`Recipe.from_sections` reads attributes of the validated sections, never with a fallback.

Semantics are torchvision.transforms.v2's, in solo-learn's op order: random resized crop (v2's ten
tries and central fallback, aspect ratio in [3/4, 4/3]), colour jitter (the four adjustments in a
random order, each strength drawn as v2 draws it), grayscale, Gaussian blur (sigma uniform),
solarization, equalization, horizontal flip, normalisation. ``batched.py`` executes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config.datasets import DATASETS

#: v2.RandomResizedCrop's aspect-ratio range (solo-learn's configs do not set it)
ASPECT_RATIO = (3 / 4, 4 / 3)
#: v2.RandomResizedCrop's tries before the central fallback
CROP_TRIES = 10


def blur_kernel(crop_size: int) -> int:
    """An odd kernel of about a tenth of the crop (23 px at 224, as in SimCLR/BYOL)."""
    k = max(3, int(round(crop_size * 0.1)))
    return k if k % 2 else k + 1


def jitter_range(strength: float, center: float, clip: bool) -> Optional[tuple[float, float]]:
    """v2.ColorJitter's factor range for one adjustment; None (the op is skipped) for strength 0."""
    lo, hi = center - strength, center + strength
    if clip:
        lo = max(lo, 0.0)
    return None if lo == hi == center else (lo, hi)


@dataclass(frozen=True)
class CropRecipe:
    """One entry of the ``augmentations`` list: ``num_crops`` crops of ``size`` pixels."""

    size: int
    num_crops: int
    rrc: bool  # random resized crop; false: resize the short side and take the centre
    scale: tuple[float, float]
    interpolation: str  # bicubic or bilinear, antialiased
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
    def from_config(cls, aug: Any) -> CropRecipe:
        """From one validated ``augmentations`` entry (every key present)."""
        cj = aug.color_jitter
        return cls(
            size=int(aug.crop_size), num_crops=int(aug.num_crops), rrc=bool(aug.rrc.enabled),
            scale=(float(aug.rrc.crop_min_scale), float(aug.rrc.crop_max_scale)),
            interpolation=str(aug.rrc.interpolation), jitter_prob=float(cj.prob),
            brightness=float(cj.brightness), contrast=float(cj.contrast),
            saturation=float(cj.saturation), hue=float(cj.hue),
            gray_prob=float(aug.grayscale.prob), blur_prob=float(aug.gaussian_blur.prob),
            sigma=(float(aug.gaussian_blur.sigma_min), float(aug.gaussian_blur.sigma_max)),
            solarize_prob=float(aug.solarization.prob),
            equalize_prob=float(aug.equalization.prob),
            flip_prob=float(aug.horizontal_flip.prob))

    @property
    def kernel_size(self) -> int:
        return blur_kernel(self.size)

    @property
    def log_ratio(self) -> tuple[float, float]:
        return math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1])

    @property
    def jitter_ranges(self) -> tuple[Optional[tuple[float, float]], ...]:
        """Brightness, contrast, saturation, hue factor ranges (None: that adjustment is off)."""
        return (jitter_range(self.brightness, 1.0, True), jitter_range(self.contrast, 1.0, True),
                jitter_range(self.saturation, 1.0, True), jitter_range(self.hue, 0.0, False))


@dataclass(frozen=True)
class Recipe:
    """The whole ``augmentations`` list and the normalisation: the crops of a training batch are
    ``num_crops`` crops of the first entry, then of the second, and so on."""

    entries: tuple[CropRecipe, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_sections(cls, augmentations: Sequence[Any], data: Any) -> Recipe:
        """From a validated pretraining config's ``augmentations`` and ``data`` sections."""
        mean, std = dataset_stats(data, augmentations)
        return cls(tuple(CropRecipe.from_config(a) for a in augmentations), mean, std)

    @property
    def crops(self) -> tuple[CropRecipe, ...]:
        """One recipe per crop of a batch, in order."""
        return tuple(e for e in self.entries for _ in range(e.num_crops))

    @property
    def num_crops(self) -> int:
        return len(self.crops)


def dataset_stats(data: Any, augmentations: Sequence[Any]
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean/std of validated ``data`` and ``augmentations`` sections:
    ``data.mean``/``data.std``, else the first augmentation entry's (solo-learn's place for them),
    else the dataset's."""
    info = DATASETS[data.dataset]
    first = augmentations[0] if len(augmentations) else None
    mean = data.mean or (first.mean if first is not None else None) or info.mean
    std = data.std or (first.std if first is not None else None) or info.std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
