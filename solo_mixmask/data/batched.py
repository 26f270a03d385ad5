"""Batched crop recipes: whole uint8 batches in, normalised float32 crops out, on any device.

For the device-resident data path (CIFAR, Tiny-ImageNet and STL-10 kept as one uint8 ``(N, 3, H, W)``
tensor on the GPU): every op draws its parameters per sample and runs on the whole batch, without
worker processes. Each op has a params/apply split (``BatchedRecipe.sample``/``.apply`` and the
functional ops below), so tests can apply fixed parameters and callers can see what was drawn.

The reference is the per-image recipe of :mod:`solo_mixmask.data.augmentations` (torchvision.
transforms.v2 draw for draw): same op order (crop, colour jitter, grayscale, blur, solarization,
equalization, flip, normalisation), same parameter distributions, same kernels. Numeric domain: the
working image is float32 holding whole grey levels 0..255, re-quantised after every op exactly as
torchvision re-quantises its uint8 result: the resize rounds (torch's fixed-point uint8 kernel, in
exact int32 arithmetic), the brightness/contrast/saturation blends clamp and truncate, grayscale and
hue truncate, the blur rounds. Only the normalisation at the end leaves whole levels.

Measured against torchvision's functional ops on the CPU on real images, with the same parameters:
resized crop (bicubic and bilinear, any box, up- or downscaling), brightness, contrast, saturation,
grayscale, solarization, equalization (torchvision's own batched kernel) and flip are bit-identical;
hue and blur differ by one grey level on a few pixels in 100,000.

Every way this differs from the per-image recipe / torchvision:

* The random stream: parameters come from an explicit ``torch.Generator`` on the batch's device,
  drawn for the whole batch at once, so individual draws differ from a per-image run with the same
  seed (the distributions are the same). Every parameter is drawn for every sample, also for ops
  that are disabled or whose coin fails, so the stream depends only on the number of samples and
  crops, never on the data or the config's probabilities.
* Crop boxes: all ten v2 tries of a sample are drawn up front and the first fitting one is used (v2
  stops drawing at the first fitting try); the box rule and the central fallback are v2's exactly.
  The offsets are ``floor(u * (H - h + 1))`` with ``u ~ U[0, 1)`` in float64 instead of
  ``torch.randint``. Boxes must lie inside the image (as random resized crop draws them); v2's zero
  padding of boxes that leave the image is not reproduced.
* Resize: equals torchvision on the CPU, whose uint8 kernel rounds to uint8 between the horizontal
  and the vertical pass. torchvision on a GPU resizes in float and rounds once, so *torchvision
  itself* gives different crops on the two devices (bicubic: up to ~10 levels at sharp edges, where
  the intermediate overshoot is clamped on the CPU only); this module gives the CPU result on every
  device, computed by element-wise gathers, so TF32 and autocast settings cannot change it.
* Hue: the closed form of :func:`solo_mixmask.data.augmentations.adjust_hue`, as the per-image
  recipe uses, instead of v2's RGB->HSV->RGB round trip (one level on a few pixels in 100,000).
* Gaussian blur: two separable 1-D passes (every tap kept) instead of v2's dense 2-D convolution
  (on a GPU possibly run in TF32 by cuDNN); same weights, same reflect padding, one level on a few
  pixels in 100,000. (The per-image recipe's blur also drops taps beyond 5 sigma.)
* Float results on a GPU (hue, blur, the contrast mean) may differ from the CPU in the last bit,
  and so by one level on rare pixels; the resize and the other ops are exact on every device.
* ``rrc.ratio`` and ``rrc.interpolation`` (bicubic or bilinear) are honoured, the latter also for
  the resize when ``rrc.enabled`` is false; check the per-image recipe for which of them it reads.

Execution: on the CPU a random op is computed only on the samples whose coin came up; on an
accelerator it runs on the whole batch and ``where`` keeps the drawn samples (same crops), so the
recipe never reads a data-dependent size back to the host and queues all its kernels without a
synchronisation. Ops whose probability is 0 are skipped entirely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as nnf
from omegaconf import DictConfig, OmegaConf
from torchvision.transforms.v2 import functional as TF

from ..config.loading import select
from ..errors import ConfigError
from .augmentations import blur_kernel

AugConfig = Union[DictConfig, Mapping[str, Any]]
INTERPOLATIONS = ("bicubic", "bilinear")
_NUM_TRIES = 10  # v2.RandomResizedCrop's tries before the central fallback
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
SUBSET_DEVICE_TYPES: tuple[str, ...] = ("cpu",)  # where random ops compute only their subset


# ------------------------------------------------------------------------------- random draws
def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    """The generator must live where the batch lives: draws happen on that device, no copies."""
    gdev = torch.device(generator.device)
    same = gdev.type == device.type and (
        gdev.index is None or device.index is None or gdev.index == device.index)
    if not same:
        raise ValueError(f"generator is on {gdev} but the batch is on {device}; create it with "
                         f"torch.Generator(device=batch.device)")


def _uniform(shape: Sequence[int], lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """float32 ``U[lo, hi)`` like v2's ``torch.empty(1).uniform_(lo, hi)``, on the generator's device."""
    return torch.empty(*shape, device=generator.device).uniform_(lo, hi, generator=generator)


def _rand64(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, device=generator.device, generator=generator)


def fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """v2.RandomResizedCrop's central fallback size ``(h, w)`` after ten failed tries."""
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def boxes_from_draws(scale_draws: torch.Tensor, log_ratio_draws: torch.Tensor, u_top: torch.Tensor,
                     u_left: torch.Tensor, height: int, width: int,
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop boxes ``(B, 4)`` int64 ``[top, left, h, w]`` from the raw draws, by v2's rule.

    ``scale_draws``/``log_ratio_draws`` (B, tries) float32 are the area fractions and log aspect
    ratios of the tries; the first try whose rounded box fits wins (v2 computes in double with
    Python's half-to-even ``round``, which float64 ``torch.round`` reproduces). Samples with no fitting
    try get the central fallback. ``u_top``/``u_left`` (B,) in [0, 1) place the box.
    """
    area = float(height * width)
    target = scale_draws.to(torch.float64) * area
    aspect = torch.exp(log_ratio_draws).to(torch.float64)  # exp in float32, as v2 does
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    tries = torch.arange(fits.shape[1], device=fits.device)
    first = torch.where(fits, tries, fits.shape[1]).amin(dim=1, keepdim=True)  # first fitting try
    found = first.squeeze(1) < fits.shape[1]
    first = first.clamp_(max=fits.shape[1] - 1)
    fh, fw = fallback_box(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.full_like(found, fh, dtype=h.dtype))
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.full_like(found, fw, dtype=w.dtype))
    top = torch.minimum((u_top * (height - h + 1)).floor(), height - h)
    left = torch.minimum((u_left * (width - w + 1)).floor(), width - w)
    top = torch.where(found, top, (height - h).div(2).floor())
    left = torch.where(found, left, (width - w).div(2).floor())
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def sample_crop_boxes(batch: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Random resized crop boxes ``(B, 4)`` ``[top, left, h, w]``: v2's ten tries, vectorised."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    s = _uniform((batch, _NUM_TRIES), scale[0], scale[1], generator)
    r = _uniform((batch, _NUM_TRIES), log_ratio[0], log_ratio[1], generator)
    u = _rand64((2, batch), generator)
    return boxes_from_draws(s, r, u[0], u[1], height, width, ratio)


# ------------------------------------------------------------------------------------- resize
def _filter(x: torch.Tensor, interpolation: str) -> torch.Tensor:
    """torch's antialias filters (same expressions): Keys cubic with a=-0.5 (as Pillow), triangle."""
    x = x.abs()
    if interpolation == "bilinear":
        return (1.0 - x).clamp_min(0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def resample_taps(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int,
                  interpolation: str = "bicubic") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample 1-D taps of ``interpolate(crop, antialias=True, align_corners=False)``.

    Resizes the segment ``[start, start + length)`` of an axis of ``in_size`` pixels to ``out_size``
    pixels. Returns ``index`` (B, out, T) int64 into the full axis and ``weight`` (B, out, T)
    float64: output ``i`` is ``sum_t weight[i, t] * x[index[i, t]]``. The weights are torch's (in
    double, as its uint8 kernel computes them): filter support scaled by the downscaling factor,
    taps cut at the crop's border and renormalised, so pixels outside the crop never contribute;
    unused taps have weight 0. T is a bound that depends only on the sizes, so nothing waits for
    the device.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    half = 2.0 if interpolation == "bicubic" else 1.0
    taps = int(math.ceil(2.0 * half * max(in_size / out_size, 1.0))) + 1
    dev = start.device
    length = length.to(torch.float64).unsqueeze(1)
    scale = length / out_size
    center = scale * (torch.arange(out_size, dtype=torch.float64, device=dev) + 0.5)
    support = torch.where(scale >= 1.0, half * scale, torch.full_like(scale, half))
    inv_scale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    xmin = (center - support + 0.5).trunc().clamp_min(0.0)
    xmax = torch.minimum((center + support + 0.5).trunc(), length)
    pos = xmin.unsqueeze(2) + torch.arange(taps, dtype=torch.float64, device=dev)
    w = _filter((pos - center.unsqueeze(2) + 0.5) * inv_scale.unsqueeze(2), interpolation)
    w = torch.where(pos < xmax.unsqueeze(2), w, torch.zeros_like(w))
    total = w[:, :, 0]
    for t in range(1, taps):  # torch's summation order
        total = total + w[:, :, t]
    w = w / total.unsqueeze(2)
    index = (pos.to(torch.int64) + start.to(torch.int64).view(-1, 1, 1)).clamp_(0, in_size - 1)
    return index, w


def fixed_point_weights(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's uint8 resize weights: ``round(w * 2**p)`` as int16 values, ``p`` per sample.

    ``p`` is the largest precision (at most 22) at which twice the sample's largest weight still
    fits in int16, as in torch's ``_compute_index_ranges_int16_weights``; rounding is half away
    from zero. Returns ``(weights int32 (B, out, T), p int32 (B,))``.
    """
    w_max = weight.flatten(1).amax(dim=1, keepdim=True)
    scales = torch.exp2(torch.arange(1, 23, dtype=torch.float64, device=weight.device))
    # torch stops at the first precision whose next one overflows; the test is monotonic in it
    p = ((0.5 + w_max * scales).trunc() < (1 << 15)).sum(dim=1).to(torch.int32)
    v = weight * torch.exp2(p.to(torch.float64)).view(-1, 1, 1)
    return (v + torch.where(v < 0, -0.5, 0.5)).trunc().to(torch.int32), p


Taps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # index, int32 weights, precision


def _fixed_taps(index: torch.Tensor, weight: torch.Tensor) -> Taps:
    return (index, *fixed_point_weights(weight))


def _tap_sum(x: torch.Tensor, dim: int, taps: Taps) -> torch.Tensor:
    """One pass of torch's uint8 resize along ``dim`` (2 or 3), in exact int32 arithmetic.

    ``out = clamp((2**(p-1) + sum_t w_t * x[index_t]) >> p, 0, 255)`` with the fixed-point weights.
    """
    index, wint, p = taps
    b, c, h, w = x.shape
    out_size = index.shape[1]
    shape = (b, 1, out_size, 1) if dim == 2 else (b, 1, 1, out_size)
    full = (b, c, out_size, w) if dim == 2 else (b, c, h, out_size)
    p = p.view(b, 1, 1, 1)
    acc = torch.bitwise_left_shift(torch.ones_like(p), p - 1).expand(full).clone()
    for t in range(index.shape[2]):
        acc += x.gather(dim, index[:, :, t].view(shape).expand(full)) * wint[:, :, t].view(shape)
    return torch.bitwise_right_shift(acc, p).clamp_(0, 255)


def _resample(x: torch.Tensor, taps_y: Taps, taps_x: Taps) -> torch.Tensor:
    """Horizontal then vertical pass, each rounded to uint8 (torch's CPU uint8 kernel)."""
    out = _tap_sum(x.to(torch.int32), 3, taps_x)
    out = _tap_sum(out, 2, taps_y)
    return out.to(torch.float32)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int,
                 interpolation: str = "bicubic") -> torch.Tensor:
    """``F.resized_crop(x[b], *boxes[b], [size, size], interpolation, antialias=True)`` per sample.

    ``x`` (B, C, H, W) uint8 (or float grey levels); ``boxes`` (B, 4) ``[top, left, h, w]`` inside
    the image. Returns float32 grey levels (B, C, size, size).
    """
    _, _, height, width = x.shape
    boxes = boxes.to(x.device)
    taps_y = _fixed_taps(*resample_taps(boxes[:, 0], boxes[:, 2], size, height, interpolation))
    taps_x = _fixed_taps(*resample_taps(boxes[:, 1], boxes[:, 3], size, width, interpolation))
    return _resample(x, taps_y, taps_x)


def resize_center_crop(x: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """``F.center_crop(F.resize(x, [size], interpolation, antialias=True), [size, size])``.

    The resize of the short side to ``size`` and the central crop form one resampling: the taps of
    the full resize, keeping only the central output rows/columns (the fixed-point precision
    still comes from the full resize, as in torch).
    """
    b, _, height, width = x.shape
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_h, new_w = size, int(size * width / height)
    if (new_h, new_w) == (height, width) == (size, size):
        return x.to(torch.float32)  # v2's resize returns the image as it is
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    zeros = torch.zeros(b, dtype=torch.int64, device=x.device)

    def taps(new: int, old: int, first: int) -> Taps:
        index, wint, p = _fixed_taps(*resample_taps(zeros, torch.full_like(zeros, old), new, old,
                                                    interpolation))
        return index[:, first:first + size], wint[:, first:first + size], p

    return _resample(x, taps(new_h, height, top), taps(new_w, width, left))


# ----------------------------------------------------------------------------- colour ops
def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return value.to(device=x.device, dtype=torch.float32).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` on uint8: ``x * r + other * (1 - r)``, clamped, truncated.

    ``addcmul`` rounds like v2's ``add_(other, alpha=1 - r)`` (one fused multiply-add).
    """
    return torch.addcmul(x.mul(ratio), other, 1.0 - ratio).clamp_(0.0, 255.0).trunc_()


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma in float (B, 1, H, W), before any rounding."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(_GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(-3)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_brightness`` per sample: ``x * f`` clamped and truncated."""
    return x.mul(_per_sample(factor, x)).clamp_(0.0, 255.0).trunc_()


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_contrast`` per sample: blend with the mean of the floored luma of each image."""
    mean = _gray(x).floor_().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _per_sample(factor, x))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_saturation`` per sample: blend with the floored luma."""
    return _blend(x, _gray(x).floor_(), _per_sample(factor, x))


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """HSV hue shift per sample, in closed form (see ``augmentations.adjust_hue``).

    ``factor`` in [-0.5, 0.5]. Output truncates ``v * 255.999`` like v2's float->uint8 conversion.
    """
    v = x.mul(1.0 / 255.0)
    maxc, idx = v.max(dim=-3, keepdim=True)
    chroma = maxc - v.amin(dim=-3, keepdim=True)
    num = v.roll(-1, -3) - v.roll(-2, -3)  # r: g-b, g: b-r, b: r-g
    h6 = num.gather(-3, idx).div_(chroma.clamp_min(1e-12)).add_(idx, alpha=2.0)
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)  # 5, 3, 1
    k = h6.add_(_per_sample(factor, x) * 6.0).add(offsets).remainder_(6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.sub(w.mul_(chroma)).mul_(256.0 - 1e-3).trunc_()


JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn: Callable[..., torch.Tensor],
               *per_sample: torch.Tensor) -> torch.Tensor:
    """``fn`` on the samples where ``mask`` holds, the rest unchanged.

    On the CPU only that subset is computed. On an accelerator ``fn`` runs on the whole batch and
    ``where`` keeps the masked samples: the subset's size would have to be read back to the host
    (a synchronisation per call, 16 per colour jitter), which costs more there than the arithmetic
    on small images; without it the whole recipe queues its kernels without waiting. Every op is
    per sample, so both give the same crops.
    """
    if x.device.type not in SUBSET_DEVICE_TYPES:
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *per_sample), x)
    index = mask.nonzero().squeeze(1)
    n = index.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return fn(x, *per_sample)
    out = fn(x.index_select(0, index), *(p.index_select(0, index) for p in per_sample))
    return x.index_copy(0, index, out)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                 enabled: Sequence[bool] = (True, True, True, True)) -> torch.Tensor:
    """v2.ColorJitter with per-sample factors and per-sample order.

    ``factors`` (B, 4): brightness, contrast, saturation, hue; ``order`` (B, 4): a permutation of
    0..3 per sample (v2's ``randperm(4)``); ops with ``enabled[k]`` false are skipped, as v2 skips
    a ``None`` range. Round ``r`` applies to each sample the op at position ``r`` of its order,
    each op on the samples that need it in that round (see ``_on_subset``).
    """
    order = order.to(x.device)
    for r in range(4):
        for k, op in enumerate(JITTER_OPS):
            if enabled[k]:
                x = _on_subset(x, order[:, r] == k, op, factors[:, k])
    return x


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``F.rgb_to_grayscale(x, 3)``: truncated luma in all three channels."""
    return _gray(x).trunc_().expand_as(x)


def gaussian_kernels(kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """v2's normalised 1-D Gaussian (B, k) per sample: softmax of -(t / sigma)^2, t/sqrt(2) taps."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, steps=kernel_size, device=sigma.device)
    return torch.softmax(t.div(sigma.to(torch.float32).view(-1, 1)).pow(2).neg(), dim=1)


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """``F.gaussian_blur(x[b], [k, k], [sigma[b]] * 2)`` per sample, as two 1-D passes, rounded.

    Reflect padding like v2 (needs ``kernel_size // 2 < min(H, W)``).
    """
    b, _, height, width = x.shape
    pad = kernel_size // 2
    kernel = gaussian_kernels(kernel_size, sigma.to(x.device))
    padded = nnf.pad(x, [pad, pad, pad, pad], mode="reflect")
    rows: Optional[torch.Tensor] = None
    for t in range(kernel_size):
        term = padded[..., t:t + width] * kernel[:, t].view(b, 1, 1, 1)
        rows = term if rows is None else rows.add_(term)
    assert rows is not None
    out: Optional[torch.Tensor] = None
    for t in range(kernel_size):
        term = rows[..., t:t + height, :] * kernel[:, t].view(b, 1, 1, 1)
        out = term if out is None else out.add_(term)
    assert out is not None
    return out.round_()


def solarize(x: torch.Tensor, threshold: float = 128.0) -> torch.Tensor:
    """``F.solarize``: grey levels at or above ``threshold`` inverted."""
    return torch.where(x >= threshold, 255.0 - x, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``F.equalize`` (torchvision's kernel is batched already; the grey levels are exact in uint8)."""
    return TF.equalize(x.to(torch.uint8)).to(torch.float32)


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as one multiply and one subtraction; float32, contiguous."""
    m = torch.tensor([float(v) for v in mean], device=x.device).view(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], device=x.device).view(1, -1, 1, 1)
    return (x * (1.0 / (255.0 * s)) - m / s).contiguous()


# -------------------------------------------------------------------------------- recipes
@dataclass
class RecipeParams:
    """Every random draw of one crop recipe for one batch (all tensors on the batch's device).

    ``boxes`` (B, 4) int64 ``[top, left, h, w]`` (the whole image when rrc is disabled);
    ``jitter_factors`` (B, 4) brightness, contrast, saturation, hue; ``jitter_order`` (B, 4) a
    permutation per sample; ``sigma`` (B,) the blur sigma; the rest (B,) bool masks of the random
    applies. Masks of disabled ops are all False.
    """

    boxes: torch.Tensor
    jitter: torch.Tensor
    jitter_factors: torch.Tensor
    jitter_order: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    equalize: torch.Tensor
    flip: torch.Tensor


def _as_config(aug: AugConfig) -> DictConfig:
    if isinstance(aug, DictConfig):
        return aug
    if isinstance(aug, Mapping):
        return OmegaConf.create(dict(aug))
    raise ConfigError(f"an augmentation entry must be a mapping, got {type(aug).__name__}")


def _prob(cfg: DictConfig, key: str) -> float:
    p = float(select(cfg, key, 0.0))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentations: {key} must be in [0, 1], got {p}")
    return p


def _pair(cfg: DictConfig, key: str, default: tuple[float, float]) -> tuple[float, float]:
    value = select(cfg, key, None)
    if value is None:
        return default
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augmentations: {key} must be two numbers, got {value}") from None
    return lo, hi


def _jitter_range(value: float, center: float, clip: bool) -> Optional[tuple[float, float]]:
    """v2.ColorJitter's range for one adjustment; None (op skipped) for a zero strength."""
    lo, hi = center - value, center + value
    if clip:
        lo = max(lo, 0.0)
    return None if lo == hi == center else (lo, hi)


class BatchedRecipe:
    """One entry of the ``augmentations`` list, applied to whole uint8 batches.

    ``recipe(x, generator)`` -> float32 (B, 3, crop_size, crop_size), contiguous. ``sample`` draws
    the parameters, ``apply`` uses them: the split lets tests fix parameters and lets a caller
    inspect what was drawn.
    """

    def __init__(self, aug: AugConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        cfg = _as_config(aug)
        if select(cfg, "crop_size") is None:
            raise ConfigError("augmentations: every entry needs crop_size")
        self.size = int(cfg.crop_size)
        self.num_crops = int(select(cfg, "num_crops", 1))
        if self.size < 1 or self.num_crops < 0:
            raise ConfigError(f"augmentations: crop_size must be >= 1 and num_crops >= 0, got "
                              f"{self.size} and {self.num_crops}")
        self.rrc = bool(select(cfg, "rrc.enabled", True))
        self.scale = (float(select(cfg, "rrc.crop_min_scale", 0.08)),
                      float(select(cfg, "rrc.crop_max_scale", 1.0)))
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augmentations: need 0 < rrc.crop_min_scale <= rrc.crop_max_scale, "
                              f"got {self.scale}")
        self.ratio = _pair(cfg, "rrc.ratio", (3 / 4, 4 / 3))
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"augmentations: need 0 < rrc.ratio[0] <= rrc.ratio[1], got {self.ratio}")
        self.interpolation = str(select(cfg, "rrc.interpolation", "bicubic")).lower()
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"augmentations: rrc.interpolation must be one of {INTERPOLATIONS}, "
                              f"got {self.interpolation!r}")
        self.jitter_p = _prob(cfg, "color_jitter.prob")
        strengths = [float(select(cfg, f"color_jitter.{k}", d)) for k, d in
                     (("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.2), ("hue", 0.1))]
        if min(strengths) < 0 or strengths[3] > 0.5:
            raise ConfigError(f"augmentations: colour jitter strengths must be >= 0 and hue <= 0.5, "
                              f"got {strengths}")
        self.jitter_ranges = (_jitter_range(strengths[0], 1.0, True),
                              _jitter_range(strengths[1], 1.0, True),
                              _jitter_range(strengths[2], 1.0, True),
                              _jitter_range(strengths[3], 0.0, False))
        self.grayscale_p = _prob(cfg, "grayscale.prob")
        self.blur_p = _prob(cfg, "gaussian_blur.prob")
        self.sigma = (float(select(cfg, "gaussian_blur.sigma_min", 0.1)),
                      float(select(cfg, "gaussian_blur.sigma_max", 2.0)))
        self.kernel_size = blur_kernel(self.size)
        if self.blur_p > 0:
            if not 0.0 < self.sigma[0] <= self.sigma[1]:
                raise ConfigError(f"augmentations: need 0 < gaussian_blur.sigma_min <= sigma_max, "
                                  f"got {self.sigma}")
            if self.kernel_size // 2 >= self.size:
                raise ConfigError(f"augmentations: crop_size {self.size} is too small to blur")
        self.solarize_p = _prob(cfg, "solarization.prob")
        self.equalize_p = _prob(cfg, "equalization.prob")
        self.flip_p = _prob(cfg, "horizontal_flip.prob")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> RecipeParams:
        """All draws for a batch of ``batch`` images of ``height`` x ``width``.

        The same fixed sequence of draws whatever the config (disabled ops draw too), so the stream
        position depends only on how many batches and crops were sampled.
        """
        dev = torch.device(generator.device)
        ranges = [r if r is not None else (0.0, 0.0) for r in self.jitter_ranges]
        if self.rrc:
            boxes = sample_crop_boxes(batch, height, width, self.scale, self.ratio, generator)
        else:
            sample_crop_boxes(batch, height, width, self.scale, self.ratio, generator)  # same stream
            boxes = torch.tensor([[0, 0, height, width]], device=dev).expand(batch, 4).clone()
        coins = torch.rand(6, batch, device=dev, generator=generator)
        factors = torch.stack([_uniform((batch,), lo, hi, generator) for lo, hi in ranges], dim=1)
        order = torch.rand(batch, 4, device=dev, generator=generator).argsort(dim=1)
        sigma = _uniform((batch,), self.sigma[0], self.sigma[1], generator)
        return RecipeParams(
            boxes=boxes, jitter=coins[0] < self.jitter_p, jitter_factors=factors, jitter_order=order,
            grayscale=coins[1] < self.grayscale_p, blur=coins[2] < self.blur_p, sigma=sigma,
            solarize=coins[3] < self.solarize_p, equalize=coins[4] < self.equalize_p,
            flip=coins[5] < self.flip_p)

    def apply(self, x: torch.Tensor, p: RecipeParams) -> torch.Tensor:
        """The crops of ``x`` (B, 3, H, W) uint8 under the parameters ``p``."""
        _check_batch(x)
        if self.rrc:
            y = resized_crop(x, p.boxes, self.size, self.interpolation)
        else:
            y = resize_center_crop(x, self.size, self.interpolation)
        if self.jitter_p > 0:
            enabled = [r is not None for r in self.jitter_ranges]
            y = _on_subset(y, p.jitter, lambda z, f, o: color_jitter(z, f, o, enabled),
                           p.jitter_factors, p.jitter_order)
        if self.grayscale_p > 0:
            y = torch.where(p.grayscale.view(-1, 1, 1, 1), rgb_to_grayscale(y), y)
        if self.blur_p > 0:
            y = _on_subset(y, p.blur, lambda z, s: gaussian_blur(z, self.kernel_size, s), p.sigma)
        if self.solarize_p > 0:
            y = torch.where(p.solarize.view(-1, 1, 1, 1), solarize(y), y)
        if self.equalize_p > 0:
            y = _on_subset(y, p.equalize, equalize)
        if self.flip_p > 0:
            y = torch.where(p.flip.view(-1, 1, 1, 1), hflip(y), y)
        return self._normalize(y)

    def _normalize(self, y: torch.Tensor) -> torch.Tensor:
        if y.device not in self._norm:
            m = torch.tensor(self.mean, device=y.device).view(1, -1, 1, 1)
            s = torch.tensor(self.std, device=y.device).view(1, -1, 1, 1)
            self._norm[y.device] = (1.0 / (255.0 * s), m / s)
        scale, shift = self._norm[y.device]
        return y.mul(scale).sub_(shift).contiguous()

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(x)
        _check_generator(generator, x.device)
        return self.apply(x, self.sample(x.shape[0], x.shape[2], x.shape[3], generator))

    def __repr__(self) -> str:
        return (f"BatchedRecipe(size={self.size}, rrc={self.rrc}, scale={self.scale}, "
                f"ratio={self.ratio}, {self.interpolation}, jitter={self.jitter_p}, "
                f"grayscale={self.grayscale_p}, blur={self.blur_p}, solarize={self.solarize_p}, "
                f"equalize={self.equalize_p}, flip={self.flip_p})")


def _check_batch(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise TypeError(f"expected a uint8 batch (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")


class BatchedMultiCrop:
    """The whole ``augmentations`` list: ``mc(x, generator)`` -> the crops of every entry, in order.

    Same order as ``augmentations.MultiCrop``: ``num_crops`` crops of the first entry, then of the
    second, and so on.
    """

    def __init__(self, augmentations: Sequence[AugConfig], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.recipes = [BatchedRecipe(a, mean, std) for a in augmentations]
        if not self.recipes:
            raise ConfigError("augmentations: the list is empty")

    @property
    def num_crops(self) -> int:
        return sum(r.num_crops for r in self.recipes)

    def _crops(self) -> list[BatchedRecipe]:
        return [r for r in self.recipes for _ in range(r.num_crops)]

    def sample(self, batch: int, height: int, width: int,
               generator: torch.Generator) -> list[RecipeParams]:
        return [r.sample(batch, height, width, generator) for r in self._crops()]

    def apply(self, x: torch.Tensor, params: Sequence[RecipeParams]) -> list[torch.Tensor]:
        crops = self._crops()
        if len(params) != len(crops):
            raise ValueError(f"expected parameters for {len(crops)} crops, got {len(params)}")
        return [r.apply(x, p) for r, p in zip(crops, params)]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        _check_batch(x)
        _check_generator(generator, x.device)
        return self.apply(x, self.sample(x.shape[0], x.shape[2], x.shape[3], generator))

    def __repr__(self) -> str:
        return "\n".join(f"{r.num_crops} x {r}" for r in self.recipes)
