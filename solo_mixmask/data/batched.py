"""The one pixel implementation of the augmentation recipe: whole batches in, normalised crops out.

Both data paths run it: the device-resident path on uint8 batches held on the accelerator, the
DataLoader path in each worker's collate function (``RecipeCollate``). The recipe is a
:class:`~solo_mixmask.data.recipe.Recipe`; nothing here reads the config.

**Draws.** Every random choice of a crop comes from one row of ``DRAWS`` uniforms in [0, 1) (float64):
ten area fractions and ten log aspect ratios (v2.RandomResizedCrop's tries), the box offsets, six
coins, four jitter factors, four keys whose argsort is the jitter order, the blur sigma. The device
path draws the whole ``(crops, B, DRAWS)`` block with one ``torch.rand``; the DataLoader path draws
each sample's rows from the sample's own generator (``sampling.py``), so a resumed run replays it.
Every uniform is drawn whatever the config, so the stream never depends on the data or the
probabilities.

**Execution.** The crops of all entries that share a size, an interpolation and the crop mode are
stacked into one batch, with the entries' parameters as per-sample tensors, so an asymmetric
two-crop recipe is one pass. Each op is written as one generic form with per-sample coefficients,
where an op that a sample does not take has identity coefficients (a blend ratio of 1, a hue shift
of 0, a delta blur kernel): no data-dependent sizes, no ``where`` over four alternatives, no
synchronisation with the host, and a graph that ``torch.compile(fullgraph=True)`` accepts.

* Resize: torch's antialiased uint8 kernel (horizontal pass, rounding, vertical pass, rounding) as
  two batched matrix products with dense per-sample tap matrices. The fixed-point weights are
  torch's, tabulated once per (input size, output size, interpolation) by crop length, and the
  integer sums are exact in float64, so the crops equal torchvision's on the CPU bit for bit on
  every device (torchvision itself resizes in float on a GPU and gives other crops there).
* Colour jitter: v2's four adjustments in each sample's own random order. Brightness, contrast
  and saturation are one blend ``clamp(trunc(x * r + other * (1 - r)))`` with per-sample ``r`` and
  ``other`` (0, the mean grey or the grey); the hue shift is the closed-form HSV rotation. Four
  blend slots and two hue slots, ``X H X X H X``, hold every one of the 24 orders.
* Blur: v2's reflect-padded Gaussian as two products with per-sample banded matrices (float64).

Exactness against torchvision's functional ops, same parameters, on the CPU: resized crop (bicubic
and bilinear), brightness, contrast, saturation, grayscale, solarization, equalization and flip are
bit-identical; hue and blur differ by one grey level on a few pixels in 100,000.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as TF

from .recipe import ASPECT_RATIO, CROP_TRIES, CropRecipe, Recipe

INTERPOLATIONS = ("bicubic", "bilinear")
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

# columns of a crop's row of uniforms
SCALE, LOG_RATIO, OFFSET = slice(0, 10), slice(10, 20), slice(20, 22)
COINS = slice(22, 28)  # jitter, grayscale, blur, solarize, equalize, flip
FACTORS, ORDER, SIGMA = slice(28, 32), slice(32, 36), 36
DRAWS = 37


# ---------------------------------------------------------------------------------- constants
_TABLES: dict[tuple, Any] = {}


def tabulated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Memoises a table of constants (resize taps, index grids) in a plain dict. Unlike
    ``functools.cache``, a compiled ``apply`` then reads the table built by an eager call instead
    of tracing its construction into every step."""
    @functools.wraps(fn)
    def lookup(*key: Any) -> Any:
        value = _TABLES.get((fn.__name__, *key))
        if value is None:
            value = _TABLES[(fn.__name__, *key)] = fn(*key)
        return value
    return lookup


# ------------------------------------------------------------------------------------ crop boxes
def crop_boxes(scale: torch.Tensor, log_ratio: torch.Tensor, offset: torch.Tensor,
               height: Any, width: Any) -> torch.Tensor:
    """Random resized crop boxes ``(N, 4)`` int64 ``[top, left, h, w]`` by v2's rule.

    ``scale``/``log_ratio`` (N, 10) float64 are the tries' area fractions and log aspect ratios,
    ``offset`` (N, 2) in [0, 1) places the box. ``height``/``width``: ints, or (N,) tensors for
    images of several sizes. The first try whose rounded box fits wins (v2 computes in double with
    Python's half-to-even ``round``, which ``torch.round`` is); with none, v2's central fallback.
    Every try's box is computed and the fallback appended as an eleventh, so one gather picks.
    """
    if isinstance(height, int) and isinstance(width, int):
        dims, fallback = _image_dims(height, width, scale.device)
        area: Any = float(height * width)
    else:
        dims = torch.stack(torch.broadcast_tensors(torch.as_tensor(height, dtype=torch.float64),
                                                   torch.as_tensor(width, dtype=torch.float64)),
                           -1).to(scale.device).reshape(-1, 1, 2)
        fallback, area = _fallback_box(dims), dims[..., 0] * dims[..., 1]
    target = scale * area
    aspect = log_ratio.exp()
    hw = torch.stack([target / aspect, target * aspect], -1).sqrt_().round_()  # (N, tries, [h, w])
    room = dims - hw
    room1 = room + 1
    fits = torch.minimum(hw, room1).amin(-1) >= 1  # 1 <= h <= H and 1 <= w <= W
    corner = torch.minimum((offset.unsqueeze(1) * room1).floor_(), room)
    boxes = torch.cat([torch.cat([corner, hw], -1), fallback.expand(len(hw), 1, 4)], 1)
    first = torch.where(fits, _tries(fits.device), CROP_TRIES).amin(1)
    picked = boxes.permute(2, 0, 1).gather(2, first.view(1, -1, 1).expand(4, -1, 1))
    return picked.view(4, -1).to(torch.int64).t()  # column-major: resized_crop reads rows


@tabulated
def _tries(device: torch.device) -> torch.Tensor:
    return torch.arange(CROP_TRIES, device=device)


@tabulated
def _image_dims(height: int, width: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``[H, W]`` (1, 1, 2) and the fallback box (1, 1, 4) of one image size, as constants."""
    dims = torch.tensor([[[height, width]]], dtype=torch.float64, device=device)
    return dims, _fallback_box(dims)


def _fallback_box(dims: torch.Tensor) -> torch.Tensor:
    """v2's central box ``[top, left, h, w]`` after ten failed tries, for ``dims`` (N, 1, [H, W])."""
    h, w = dims.unbind(-1)
    ratio = w / h
    lo, hi = ASPECT_RATIO
    wide = torch.stack([h, (h * hi).round()], -1)
    tall = torch.stack([(w / lo).round(), w], -1)
    hw = torch.where((ratio < lo).unsqueeze(-1), tall,
                     torch.where((ratio > hi).unsqueeze(-1), wide, dims))
    return torch.cat([(dims - hw).div(2).floor_(), hw], -1)


# ----------------------------------------------------------------------------------------- resize
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

    Resizes the segment ``[start, start + length)`` of an axis of ``in_size`` pixels to ``out_size``.
    Returns ``index`` (B, out, T) int64 into the full axis and ``weight`` (B, out, T) float64, torch's
    (in double, as its uint8 kernel computes them): taps cut at the crop's border and renormalised,
    so pixels outside the crop never contribute; unused taps have weight 0.
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
    p = ((0.5 + w_max * scales).trunc() < (1 << 15)).sum(dim=1).to(torch.int32)
    v = weight * torch.exp2(p.to(torch.float64)).view(-1, 1, 1)
    return (v + torch.where(v < 0, -0.5, 0.5)).trunc().to(torch.int32), p


def _dense(index: torch.Tensor, weight: torch.Tensor, in_size: int) -> torch.Tensor:
    """Dense matrices ``(B, out, in_size)`` float64 of the fixed-point weights times ``2**-p``:
    powers of two, so a product with integer grey levels is the integer sum scaled, exactly."""
    wint, p = fixed_point_weights(weight)
    scaled = wint.to(torch.float64) * torch.exp2(-p.to(torch.float64)).view(-1, 1, 1)
    dense = torch.zeros(*index.shape[:2], in_size, dtype=torch.float64, device=index.device)
    return dense.scatter_add_(2, index, scaled)


@tabulated
def _length_table(in_size: int, out_size: int, interpolation: str,
                  device: torch.device) -> torch.Tensor:
    """The tap matrix of every crop length starting at 0, ``(in_size + 1, out, 2 * in_size)``,
    behind ``in_size`` zero columns: a crop of length ``h`` starting at ``top`` reads columns
    ``in_size - top ...`` of row ``h``, so the columns left of the crop read zeros."""
    lengths = torch.arange(1, in_size + 1, device=device)
    dense = _dense(*resample_taps(torch.zeros_like(lengths), lengths, out_size, in_size,
                                  interpolation), in_size)
    table = torch.zeros(in_size + 1, out_size, 2 * in_size, dtype=torch.float64, device=device)
    table[1:, :, in_size:] = dense
    return table


@tabulated
def _columns(in_size: int, device: torch.device) -> torch.Tensor:
    return torch.arange(in_size, 2 * in_size, device=device)


def _crop_matrices(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int,
                   interpolation: str) -> torch.Tensor:
    """Per-sample tap matrices ``(N, out, in)`` of the segments ``[start, start + length)``."""
    table = _length_table(in_size, out_size, interpolation, start.device)
    src = _columns(in_size, start.device) - start.view(-1, 1, 1)  # (N, 1, in)
    return table.index_select(0, length).gather(2, src.expand(-1, out_size, -1))


def _resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x`` (..., C, H, W) through the vertical ``rows`` and horizontal ``cols`` matrices
    (..., S, H)/(..., S, W): horizontal pass, rounding, vertical pass, rounding, as torch's uint8
    kernel does. The sums are exact in float64. Each pass is one batched product that carries the
    channels along: ``cols @ x`` on x laid out (W, C * H), then the result (S * C, H) ``@ rows^T``,
    whose (S_w, C, S_h) layout the final float32 copy turns back. Returns float32 grey levels."""
    c, h, w = x.shape[-3:]
    lead = torch.broadcast_shapes(x.shape[:-3], rows.shape[:-2], cols.shape[:-2])
    s_h, s_w = rows.shape[-2], cols.shape[-2]
    # one copy converts, transposes and broadcasts x
    xt = torch.empty(*lead, w, c, h, dtype=torch.float64, device=x.device)
    xt.copy_(x.movedim(-1, -3).expand(*lead, w, c, h))
    t = torch.matmul(cols.expand(*lead, s_w, w), xt.view(*lead, w, c * h))
    t = t.add_(0.5).floor_().clamp_(0.0, 255.0).view(*lead, s_w * c, h)
    t = torch.matmul(t, rows.expand(*lead, s_h, h).transpose(-1, -2))
    t = t.add_(0.5).floor_().clamp_(0.0, 255.0).view(*lead, s_w, c, s_h)
    return t.permute(*range(len(lead)), -2, -1, -3).to(torch.float32,
                                                          memory_format=torch.contiguous_format)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int,
                 interpolation: str = "bicubic", out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.resized_crop(x[b], *boxes[b], [size, size], interpolation, antialias=True)`` per sample.

    ``x`` (B, C, H, W) uint8; ``boxes`` (..., B, 4) ``[top, left, h, w]`` inside the image (a
    leading dimension crops the same images several times). Float32 grey levels (..., B, C, S, S);
    on the CPU written into ``out`` (``crop_images``) when given.
    """
    height, width = x.shape[-2:]
    lead = boxes.shape[:-1]
    if not dense(x.device):
        return crop_images(x, boxes.reshape(-1, 4).tolist(), size, interpolation, out).view(
            *lead, 3, size, size)
    # [top, left, h, w] as four rows: a view for crop_boxes' column-major boxes
    fields = boxes.to(x.device).movedim(-1, 0)
    top, left, h, w = fields.reshape(4, -1)
    if height == width:  # both axes from one table: rows of tops then lefts
        both = _crop_matrices(fields[:2].reshape(-1), fields[2:].reshape(-1), size, height,
                              interpolation).view(2, *lead, size, height)
        return _resample(x, both[0], both[1])
    rows = _crop_matrices(top, h, size, height, interpolation)
    cols = _crop_matrices(left, w, size, width, interpolation)
    return _resample(x, rows.view(*lead, size, height), cols.view(*lead, size, width))


#: device types that run the dense forms (matrix products, whole-batch ops with identity
#: coefficients); elsewhere (the CPU) the crops are torchvision's own resize per image and each op
#: runs on the samples it changes, which is several times less work there and costs no
#: synchronisation
DENSE_DEVICE_TYPES: tuple[str, ...] = ("cuda", "xpu", "mps", "hpu")
#: values per chunk of the CPU pixel stage (1 MB of float32)
CHUNK_VALUES = 1 << 18


def dense(device: torch.device) -> bool:
    return device.type in DENSE_DEVICE_TYPES


def crop_images(images: Sequence[torch.Tensor], boxes: list[list[int]], size: int,
                interpolation: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The CPU form of the resized crop: torchvision's own uint8 kernel (the reference the dense
    form reproduces), image ``i % len(images)`` cut at ``boxes[i]``, written into one float32
    batch (``out``, or a new one). Images may differ in size (the DataLoader path)."""
    mode = TF.InterpolationMode(interpolation)
    if out is None:
        out = torch.empty(len(boxes), 3, size, size, dtype=torch.float32, device=images[0].device)
    for i, box in enumerate(boxes):
        out[i].copy_(TF.resized_crop(images[i % len(images)], *box, [size, size],
                                     interpolation=mode, antialias=True))
    return out


@tabulated
def _center_matrices(height: int, width: int, size: int, interpolation: str,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices of ``center_crop(resize(x, [size]), [size, size])``: the full resize's taps, the
    central output rows/columns kept (the precision still comes from the full resize, as in torch)."""
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_h, new_w = size, int(size * width / height)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    zero = torch.zeros(1, dtype=torch.int64, device=device)

    def axis(new: int, old: int, first: int) -> torch.Tensor:
        dense = _dense(*resample_taps(zero, zero + old, new, old, interpolation), old)
        return dense[0, first:first + size]

    return axis(new_h, height, top), axis(new_w, width, left)


def resize_center_crop(x: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """``F.center_crop(F.resize(x, [size], interpolation, antialias=True), [size, size])``."""
    rows, cols = _center_matrices(*x.shape[-2:], size, interpolation, x.device)
    return _resample(x, rows, cols)


# ---------------------------------------------------------------------------------- colour ops
def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return value.to(device=x.device, dtype=torch.float32).reshape(*x.shape[:-3], 1, 1, 1)


def gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma in float (..., 1, H, W), before any rounding, in its order of operations."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(_GRAY[0]).add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(-3)


def blend(x: torch.Tensor, ratio: torch.Tensor, mean_weight: torch.Tensor,
          gray_weight: torch.Tensor) -> torch.Tensor:
    """v2's brightness, contrast and saturation in one form, clamped and truncated:
    ``x * r + luma * gray_weight + mean * mean_weight`` with the floored luma and its mean. v2 adds
    ``other * (1 - r)`` to ``x * r``, ``other`` 0 (brightness), the mean (contrast) or the luma
    (saturation): with one weight ``1 - r`` and the other 0, the sum rounds exactly as v2's does.
    No op is ``r = 1`` with both weights 0. On the CPU a term whose weights are all 0 is left out
    (it adds exact zeros), so a chunk of brightness alone never computes the luma.
    """
    out = x.mul(_per_sample(ratio, x))
    full = dense(x.device)
    with_gray, with_mean = full or bool(gray_weight.any()), full or bool(mean_weight.any())
    if with_gray or with_mean:
        luma = gray(x).floor_()
        if with_gray:
            out.addcmul_(luma, _per_sample(gray_weight, x))
        if with_mean:
            out.addcmul_(luma.mean(dim=(-3, -2, -1), keepdim=True), _per_sample(mean_weight, x))
    return out.clamp_(0.0, 255.0).trunc_()


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_brightness`` per sample."""
    zero = torch.zeros_like(factor)
    return blend(x, factor, zero, zero)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_contrast`` per sample."""
    return blend(x, factor, 1.0 - factor.float(), torch.zeros_like(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_saturation`` per sample."""
    return blend(x, factor, torch.zeros_like(factor), 1.0 - factor.float())


@tabulated
def _hue_offsets(device: torch.device) -> torch.Tensor:
    return torch.tensor([5.0, 3.0, 1.0], device=device).view(3, 1, 1)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """v2's HSV hue shift per sample (``factor`` in [-0.5, 0.5]; 0 leaves whole levels unchanged)."""
    return shift_hue(x, factor.to(device=x.device, dtype=torch.float32) * 6.0)


def shift_hue(x: torch.Tensor, sextants: torch.Tensor) -> torch.Tensor:
    """The hue shift by ``sextants`` (N,) = 6 x v2's hue factor.

    With ``h6`` the hue in sextants, ``v`` the max and ``c`` the chroma, channel ``n`` of the
    shifted image is ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h6') mod 6``: the HSV->RGB
    identity without building the H, S, V planes. Truncates ``v * 255.999`` like v2's float->uint8.
    """
    v = x.mul(1.0 / 255.0)
    maxc, idx = v.max(dim=-3, keepdim=True)  # ties pick r before g before b, as torchvision does
    chroma = maxc - v.amin(dim=-3, keepdim=True)
    num = v.roll(-1, -3) - v.roll(-2, -3)  # r: g-b, g: b-r, b: r-g
    h6 = num.gather(-3, idx).div_(chroma.clamp_min(1e-12)).add_(idx, alpha=2.0)
    k = h6.add_(_per_sample(sextants, x)).add(_hue_offsets(x.device))
    k = k.remainder_(6.0) if dense(x.device) else _wrap_sextants(k)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.sub(w.mul_(chroma)).mul_(256.0 - 1e-3).trunc_()


def _wrap_sextants(k: torch.Tensor) -> torch.Tensor:
    """``k.remainder(6)`` bit for bit on the hue's range [-3, 13] (any hue factor within v2's
    +-0.5), in ops that are fast on the CPU (its float remainder is not): ``k / 6`` never rounds
    across an integer there, ``k - 6n`` is exact for n = 1, 2, and a negative ``k`` gets ``k + 6``
    rounded, as remainder's ``fmod(k, 6) + 6`` does. The exception, a negative subnormal ``k``
    (kept, where remainder gives 6), cannot occur (``k`` is a sum with an offset of at least 1) and
    would weigh the same 0."""
    return k.sub_(k.div(6.0).floor_().mul_(6.0))


# the jitter's six slots X H X X H X: four blend slots around two hue slots hold all 24 orders.
# By hue position q: which of the sample's three blends (in their run order) each blend slot runs
# (-1: none), and whether the first or the second hue slot runs the hue
_BLEND_SLOTS = ((-1, 0, 1, 2), (0, 1, 2, -1), (0, 1, -1, 2), (0, 1, 2, -1))
_PERMUTATION_CODE = (64, 16, 4, 1)  # an order (N, 4) of 0..3 -> one index in 0..255


@tabulated
def _schedules(device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per order code: the factor column of each blend slot (4: none), and the selectors
    ``[contrast x 4, saturation x 4, hue in slot 1, hue in slot 4]`` (float)."""
    column = torch.full((256, 4), 4, dtype=torch.int64)
    selectors = torch.zeros(256, 10)
    for order in itertools.permutations(range(4)):
        code = sum(a * w for a, w in zip(order, _PERMUTATION_CODE))
        q = order.index(3)
        blends = [a for a in order if a != 3]
        for slot, j in enumerate(_BLEND_SLOTS[q]):
            if j >= 0:
                column[code, slot] = blends[j]
                selectors[code, slot] = float(blends[j] == 1)
                selectors[code, 4 + slot] = float(blends[j] == 2)
        selectors[code, 8 if q <= 1 else 9] = 1.0
    return column.to(device), selectors.to(device), torch.tensor(_PERMUTATION_CODE, device=device)


def jitter_schedule(factors: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample coefficients of the six jitter slots, looked up by order in one table.

    ``factors`` (N, 4) brightness, contrast, saturation, hue (identity values for an adjustment
    that is off); ``order`` (N, 4) a permutation of 0..3 per sample (v2's ``randperm(4)``). Returns
    ``ratio, mean_weight, gray_weight`` (N, 4) for the blend slots (``blend``) and the hue shifts in
    sextants (N, 2) for the hue slots: a sample's three blends keep their order around its hue.
    """
    column, selectors, weights = _schedules(order.device)
    code = (order * weights).sum(1)
    f = factors.float()
    ratio = torch.cat([f, torch.ones_like(f[:, :1])], 1).gather(1, column.index_select(0, code))
    sel = selectors.index_select(0, code)
    weight = sel[:, :8].view(-1, 2, 4) * (1.0 - ratio).unsqueeze(1)
    return ratio, weight[:, 0], weight[:, 1], sel[:, 8:] * (f[:, 3:4] * 6.0)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """v2.ColorJitter with per-sample factors and order (``jitter_schedule``); x (N, 3, H, W)."""
    return run_jitter(x, jitter_schedule(factors.to(x.device), order.to(x.device)))


def run_jitter(x: torch.Tensor, schedule: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The six jitter slots ``X H X X H X`` with ``jitter_schedule``'s coefficients."""
    ratio, mean_weight, gray_weight, hue = schedule
    subsets = not dense(x.device)  # on the CPU each slot runs on the samples it changes
    blends, shifts = (ratio != 1, hue != 0) if subsets else (None, None)
    blend_slot = 0
    for kind in "XHXXHX":
        if kind == "H":
            h = 0 if blend_slot == 1 else 1
            x = on_samples(x, shifts[:, h] if subsets else None, shift_hue, hue[:, h])
        else:
            j = blend_slot
            x = on_samples(x, blends[:, j] if subsets else None, blend, ratio[:, j],
                           mean_weight[:, j], gray_weight[:, j])
            blend_slot += 1
    return x


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """``F.rgb_to_grayscale(x, 3)``: truncated luma in all three channels."""
    return gray(x).trunc_().expand_as(x)


def gaussian_kernels(kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """v2's normalised 1-D Gaussian (N, k) per sample: softmax of -(t / sigma)^2, t/sqrt(2) taps."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, steps=kernel_size, device=sigma.device)
    return torch.softmax(t.div(sigma.to(torch.float32).view(-1, 1)).pow(2).neg(), dim=1)


@tabulated
def _reflect_index(size: int, kernel_size: int, device: torch.device) -> torch.Tensor:
    """Source pixel of each tap of a reflect-padded convolution: (size, k)."""
    pos = torch.arange(size).view(-1, 1) + torch.arange(kernel_size) - kernel_size // 2
    pos = torch.where(pos < 0, -pos, pos)
    return torch.where(pos >= size, 2 * (size - 1) - pos, pos).to(device)


def blur_matrices(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Banded matrices (N, S, S) float64 of reflect-padded 1-D convolutions with ``kernels`` (N, k)."""
    index = _reflect_index(size, kernels.shape[1], kernels.device).expand(len(kernels), -1, -1)
    dense = torch.zeros(len(kernels), size, size, dtype=torch.float64, device=kernels.device)
    return dense.scatter_add_(2, index, kernels.to(torch.float64).unsqueeze(1).expand_as(index))


def blur_with(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Rows then columns through ``matrices`` (N, S, S), rounded once, as v2's blur rounds."""
    m = matrices.unsqueeze(-3)
    out = torch.matmul(m, torch.matmul(x.to(torch.float64), m.transpose(-1, -2)))
    return out.round_().float()


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """``F.gaussian_blur(x[b], [k, k], [sigma[b]] * 2)`` per sample (square images, reflect pad)."""
    return blur(x, gaussian_kernels(kernel_size, sigma.to(x.device)))


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reflect-padded separable blur with per-sample 1-D ``kernels`` (N, k), rounded once: banded
    matrix products on accelerators, shifted multiply-adds on the CPU."""
    if dense(x.device):
        return blur_with(x, blur_matrices(kernels, x.shape[-1]))
    n, _, height, width = x.shape
    k = kernels.shape[1]
    pad = k // 2
    # taps beyond 5 sigma carry under 6e-7 of the weight: on the CPU they are left out
    reach = min(pad, int(kernels[:, pad:].gt(6e-8).sum(1).max()) - 1)
    first = pad - reach
    padded = nnf.pad(x, [reach] * 4, mode="reflect")
    weights = kernels[:, first:first + 2 * reach + 1].float().view(n, -1, 1, 1, 1)
    rows = padded[..., 0:width] * weights[:, 0]
    for t in range(1, 2 * reach + 1):
        rows.addcmul_(padded[..., t:t + width], weights[:, t])
    out = rows[..., 0:height, :] * weights[:, 0]
    for t in range(1, 2 * reach + 1):
        out.addcmul_(rows[..., t:t + height, :], weights[:, t])
    return out.round_()


def on_samples(x: torch.Tensor, mask: Optional[torch.Tensor], fn: Callable[..., torch.Tensor],
               *per_sample: torch.Tensor) -> torch.Tensor:
    """``fn(x, *per_sample)`` where the op has identity coefficients for the samples outside
    ``mask``: on accelerators the whole batch (no data-dependent size), on the CPU only the
    samples in ``mask`` (the rest are unchanged either way). ``None``: every sample."""
    if mask is None or dense(x.device):
        return fn(x, *per_sample)
    index = mask.nonzero().squeeze(1)
    if index.numel() == x.shape[0]:
        return fn(x, *per_sample)
    if index.numel() == 0:
        return x
    out = fn(x.index_select(0, index), *(p.index_select(0, index) for p in per_sample))
    return x.index_copy(0, index, out)


def where_samples(x: torch.Tensor, mask: torch.Tensor,
                  fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(x)`` on the samples in ``mask``, ``x`` elsewhere: a ``where`` over the whole batch on
    accelerators, ``fn`` on the masked samples only on the CPU."""
    if dense(x.device):
        return torch.where(mask.view(-1, 1, 1, 1), fn(x), x)
    return on_samples(x, mask, fn)


def solarize(x: torch.Tensor, threshold: float = 128.0) -> torch.Tensor:
    """``F.solarize``: grey levels at or above ``threshold`` inverted."""
    return torch.where(x >= threshold, 255.0 - x, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """``F.equalize`` (torchvision's kernel is batched already; the grey levels are exact in uint8)."""
    return TF.equalize(x.to(torch.uint8)).to(torch.float32)


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as one multiply and one subtraction (into ``out`` when given)."""
    scale, shift = _norm(tuple(float(v) for v in mean), tuple(float(v) for v in std), x.device)
    return torch.mul(x, scale, out=out).sub_(shift)


# ------------------------------------------------------------------------------------ the recipe
@dataclass(frozen=True)
class CropGroup:
    """Crops of the recipe that share size, crop mode and interpolation: one stacked pass.

    ``crops`` are their positions among the batch's crops; ``low``/``width`` (G, 1, DRAWS) map the
    uniforms to each crop's parameter ranges, ``prob`` (G, 1, 6) holds its coin probabilities.
    """

    crops: tuple[int, ...]
    recipes: tuple[CropRecipe, ...]
    size: int
    rrc: bool
    interpolation: str

    @property
    def uses(self) -> dict[str, bool]:
        r = self.recipes
        return {"jitter": any(c.jitter_prob > 0 for c in r), "gray": any(c.gray_prob > 0 for c in r),
                "blur": any(c.blur_prob > 0 for c in r),
                "solarize": any(c.solarize_prob > 0 for c in r),
                "equalize": any(c.equalize_prob > 0 for c in r),
                "flip": any(c.flip_prob > 0 for c in r)}

    def ranges(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _ranges(self.recipes, device)


@tabulated
def _ranges(recipes: tuple[CropRecipe, ...],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lows, highs, probs = [], [], []
    for r in recipes:
        lo, hi = [0.0] * DRAWS, [1.0] * DRAWS
        lo[SCALE], hi[SCALE] = [r.scale[0]] * 10, [r.scale[1]] * 10
        lo[LOG_RATIO], hi[LOG_RATIO] = [r.log_ratio[0]] * 10, [r.log_ratio[1]] * 10
        for k, (identity, rng) in enumerate(zip((1.0, 1.0, 1.0, 0.0), r.jitter_ranges)):
            lo[FACTORS.start + k], hi[FACTORS.start + k] = rng if rng is not None else (identity,
                                                                                         identity)
        lo[SIGMA], hi[SIGMA] = r.sigma
        lows.append(lo)
        highs.append(hi)
        probs.append([r.jitter_prob, r.gray_prob, r.blur_prob, r.solarize_prob, r.equalize_prob,
                      r.flip_prob])
    low = torch.tensor(lows, dtype=torch.float64, device=device).unsqueeze(1)
    high = torch.tensor(highs, dtype=torch.float64, device=device).unsqueeze(1)
    prob = torch.tensor(probs, dtype=torch.float64, device=device).unsqueeze(1)
    return low, high - low, prob


def crop_groups(recipe: Recipe) -> tuple[CropGroup, ...]:
    groups: dict[tuple[int, bool, str], list[int]] = {}
    crops = recipe.crops
    for i, c in enumerate(crops):
        groups.setdefault((c.size, c.rrc, c.interpolation), []).append(i)
    return tuple(CropGroup(tuple(ix), tuple(crops[i] for i in ix), *key)
                 for key, ix in groups.items())


@dataclass
class Params:
    """A group's parameters for ``(G, B)`` crops, derived from its uniforms (all on one device)."""

    values: torch.Tensor  # (G, B, DRAWS): each uniform mapped to its range
    coins: torch.Tensor  # (G, B, 6) bool: jitter, grayscale, blur, solarize, equalize, flip

    @property
    def factors(self) -> torch.Tensor:
        """(G, B, 4) jitter factors, identity where the jitter coin failed."""
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=self.values.dtype,
                                device=self.values.device)
        return torch.where(self.coins[..., :1], self.values[..., FACTORS], identity)

    @property
    def order(self) -> torch.Tensor:
        return self.values[..., ORDER].argsort(dim=-1)

    def boxes(self, height: Any, width: Any) -> torch.Tensor:
        """(G, B, 4) crop boxes for images of ``height`` x ``width`` (ints, or (G * B,) tensors)."""
        v = self.values.flatten(0, 1)
        boxes = crop_boxes(v[:, SCALE], v[:, LOG_RATIO], v[:, OFFSET], height, width)
        return boxes.view(*self.values.shape[:2], 4)


def params(group: CropGroup, uniforms: torch.Tensor) -> Params:
    low, width, prob = group.ranges(uniforms.device)
    return Params(torch.addcmul(low, width, uniforms), uniforms[..., COINS] < prob)


class BatchedMultiCrop:
    """The recipe on whole batches: ``mc(x, generator)`` -> the batch's crops, in recipe order.

    ``x`` (B, 3, H, W) uint8 on any device, ``generator`` on the same device. ``draw`` and
    ``apply`` split the two steps, so tests can fix the draws and the DataLoader path can draw
    per sample (``apply_images`` crops images of several sizes one by one with torchvision, then
    runs the same pixel stage).

    On the CPU the crops are written into a scratch batch kept from one call to the next, and the
    normalised crops into a batch from ``allocate(shape)`` (a DataLoader worker's collate function
    allocates it in shared memory, so handing the batch to the training process copies nothing).
    """

    def __init__(self, recipe: Recipe, compile_backend: Optional[str] = None,
                 allocate: Callable[[tuple[int, ...]], torch.Tensor] = torch.empty) -> None:
        self.recipe = recipe
        self.groups = crop_groups(recipe)
        self.num_crops = recipe.num_crops
        self.allocate = allocate
        self._scratch: dict[tuple[int, ...], torch.Tensor] = {}
        #: ``torch.compile(apply, fullgraph=True, dynamic=False)`` with this backend (e.g.
        #: "inductor"), used from the second batch on: the first, eager, builds the tables. Only
        #: the dense form compiles; batches on the CPU run its CPU form eagerly
        self._compiled = (None if compile_backend is None else
                          torch.compile(self._apply, fullgraph=True, dynamic=False,
                                        backend=compile_backend))
        self._warm = False

    def draw(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Uniforms ``(crops, batch, DRAWS)`` float64 on the generator's device."""
        return torch.rand(self.num_crops, batch, DRAWS, dtype=torch.float64,
                          device=generator.device, generator=generator)

    def apply(self, x: torch.Tensor, uniforms: torch.Tensor) -> list[torch.Tensor]:
        """The crops of ``x`` (B, 3, H, W) uint8 under ``uniforms`` (crops, B, DRAWS)."""
        _check_batch(x)
        if self._compiled is not None and self._warm and dense(x.device):
            return self._compiled(x, uniforms)
        self._warm = True
        return self._apply(x, uniforms)

    def _apply(self, x: torch.Tensor, uniforms: torch.Tensor) -> list[torch.Tensor]:
        out: list[Optional[torch.Tensor]] = [None] * self.num_crops
        for group in self.groups:
            p = params(group, uniforms[list(group.crops)].to(x.device))
            y = self._crop(x, group, p, self._scratch_batch(x.device, group, x.shape[0]))
            self._place(out, group, self.pixels(y, group, p))
        return out  # type: ignore[return-value]

    def apply_images(self, images: Sequence[torch.Tensor],
                     uniforms: torch.Tensor) -> list[torch.Tensor]:
        """As ``apply`` for a list of uint8 (3, H_i, W_i) images of any sizes (the DataLoader
        path): torchvision's resized crop per image (``crop_images``, the CPU form of the crop),
        then the batched pixel stage; on an accelerator, images of one size take the batched
        pass."""
        if len({tuple(im.shape) for im in images}) == 1 and dense(images[0].device):
            return self.apply(torch.stack(list(images)), uniforms)
        out: list[Optional[torch.Tensor]] = [None] * self.num_crops
        dims = torch.tensor([im.shape[-2:] for im in images], dtype=torch.float64)
        for group in self.groups:
            p = params(group, uniforms[list(group.crops)])
            if group.rrc:
                boxes = p.boxes(dims[:, 0].repeat(len(group.crops)),
                                dims[:, 1].repeat(len(group.crops))).view(-1, 4).tolist()
                y = crop_images(images, boxes, group.size, group.interpolation,
                                self._scratch_batch(images[0].device, group, len(images)))
            else:
                y = torch.stack([resize_center_crop(im, group.size, group.interpolation)
                                 for im in images] * len(group.crops))
            y = y.view(len(group.crops), len(images), 3, group.size, group.size)
            self._place(out, group, self.pixels(y, group, p))
        return out  # type: ignore[return-value]

    @staticmethod
    def _place(out: list[Optional[torch.Tensor]], group: CropGroup, crops: torch.Tensor) -> None:
        for slot, crop in zip(group.crops, crops.unbind(0)):
            out[slot] = crop

    def _scratch_batch(self, device: torch.device, group: CropGroup,
                       batch: int) -> Optional[torch.Tensor]:
        """The CPU's reused float32 batch for a group's crops (None on accelerators): writing
        into memory touched before spares the page faults of a fresh batch."""
        if dense(device):
            return None
        shape = (len(group.crops) * batch, 3, group.size, group.size)
        if shape not in self._scratch:
            self._scratch[shape] = torch.empty(shape, dtype=torch.float32)
        return self._scratch[shape]

    @staticmethod
    def _crop(x: torch.Tensor, group: CropGroup, p: Params,
              scratch: Optional[torch.Tensor]) -> torch.Tensor:
        """(G, B, 3, S, S) float32 grey levels."""
        if not group.rrc:
            return resize_center_crop(x, group.size, group.interpolation).expand(
                len(group.crops), *x.shape[:2], group.size, group.size)
        return resized_crop(x, p.boxes(x.shape[-2], x.shape[-1]), group.size, group.interpolation,
                            scratch)

    def pixels(self, y: torch.Tensor, group: CropGroup, p: Params) -> torch.Tensor:
        """Everything after the crop, on (G, B, 3, S, S) grey levels: jitter, grayscale, blur,
        solarization, equalization, flip, normalisation. On the CPU in chunks of about a megabyte
        of pixels, each normalised into its place of the output: each op then reads its input from
        cache, not from memory (3x at 224 px)."""
        shape = y.shape
        y = y.reshape(-1, *shape[2:])
        coins = p.coins.reshape(-1, 6)
        values = p.values.reshape(-1, DRAWS)
        schedule = jitter_schedule(p.factors.reshape(-1, 4).to(y.device),
                                   p.order.reshape(-1, 4).to(y.device))
        mean, std = self.recipe.mean, self.recipe.std
        if dense(y.device):
            return normalize(self._pixels(y, group, coins, values, schedule).view(shape), mean, std)
        out = self.allocate(tuple(y.shape))
        step = max(1, CHUNK_VALUES // y[0].numel())
        for i in range(0, len(y), step):
            part = slice(i, i + step)
            chunk = self._pixels(y[part], group, coins[part], values[part],
                                 tuple(c[part] for c in schedule))
            normalize(chunk, mean, std, out[part])
        return out.view(shape)

    @staticmethod
    def _pixels(y: torch.Tensor, group: CropGroup, coins: torch.Tensor, values: torch.Tensor,
                schedule: tuple[torch.Tensor, ...]) -> torch.Tensor:
        uses = group.uses
        if uses["jitter"]:
            y = run_jitter(y, schedule)
        if uses["gray"]:
            y = where_samples(y, coins[:, 1], rgb_to_grayscale)
        if uses["blur"]:
            kernels = gaussian_kernels(group.recipes[0].kernel_size, values[:, SIGMA])
            delta = torch.zeros_like(kernels)
            delta[:, kernels.shape[1] // 2] = 1.0
            y = on_samples(y, coins[:, 2], blur, torch.where(coins[:, 2:3], kernels, delta))
        if uses["solarize"]:
            y = where_samples(y, coins[:, 3], solarize)
        if uses["equalize"]:
            y = where_samples(y, coins[:, 4], equalize)
        if uses["flip"]:
            y = where_samples(y, coins[:, 5], hflip)
        return y

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        _check_batch(x)
        _check_generator(generator, x.device)
        return self.apply(x, self.draw(x.shape[0], generator))

    def __repr__(self) -> str:
        return "\n".join(f"{e.num_crops} x {e}" for e in self.recipe.entries)


@tabulated
def _norm(mean: tuple[float, ...], std: tuple[float, ...],
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, device=device).view(-1, 1, 1)
    s = torch.tensor(std, device=device).view(-1, 1, 1)
    return 1.0 / (255.0 * s), m / s


def _check_batch(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise TypeError(f"expected a uint8 batch (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")


def _check_generator(generator: torch.Generator, device: torch.device) -> None:
    """The generator must live where the batch lives: draws happen on that device, no copies."""
    gdev = torch.device(generator.device)
    same = gdev.type == device.type and (
        gdev.index is None or device.index is None or gdev.index == device.index)
    if not same:
        raise ValueError(f"generator is on {gdev} but the batch is on {device}; create it with "
                         f"torch.Generator(device=batch.device)")
