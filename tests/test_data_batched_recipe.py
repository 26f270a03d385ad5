"""The batched recipe (``solo_mixmask.data.batched``), the only pixel implementation, on real images.

Checked against torchvision.transforms.v2.functional op by op with fixed per-sample parameters, and
against torchvision.transforms.v2's own transforms, built from the same recipe, in distribution.
Images: real CIFAR-10 JPEGs (32 px) and Imagenette (224 px) from the shared data.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Callable

import numpy as np
import pytest
import torch
from batched_aug import eager_ops, torchvision_crop
from omegaconf import OmegaConf
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from conftest import REPO, data_file
from solo_mixmask.config.datasets import DATASETS
from solo_mixmask.config.schema import AugmentationConfig
from solo_mixmask.config.validation import validate
from solo_mixmask.data import batched as B
from solo_mixmask.data.loaders import RecipeCollate
from solo_mixmask.data.npz import load_npz
from solo_mixmask.data.recipe import ASPECT_RATIO, CropRecipe, Recipe, blur_kernel
from solo_mixmask.errors import ConfigError

pytestmark = pytest.mark.data

MEAN, STD = DATASETS["cifar10"].mean, DATASETS["cifar10"].std
AUG_DIR = REPO / "scripts" / "pretrain" / "cifar" / "augmentations"
N_DRAWS = 4000  # draws per distribution check
Z = 4.5  # tolerance in standard errors: a false alarm about once in 150,000 checks


def _decode(relative: str, count: int) -> torch.Tensor:
    """``count`` real images spread over the file, as one uint8 (N, 3, H, W) batch."""
    z = load_npz(data_file(relative))
    jpeg, offsets = z["jpeg"], z["offsets"]
    picks = np.linspace(0, len(offsets) - 2, count).astype(np.int64)
    data = [torch.from_numpy(jpeg[offsets[i]:offsets[i + 1]].copy()) for i in picks]
    return torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB))  # some Imagenette JPEGs are gray


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: its ops are many and small, and on a shared machine
    every parallel region waits for a descheduled second thread (5-10x slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar() -> torch.Tensor:
    return _decode("cifar10-jpeg/train.npz", 400)


@pytest.fixture(scope="module")
def imagenette() -> torch.Tensor:
    return _decode("imagenette2-224px/train_200pc.npz", 12)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_levels(got: torch.Tensor, ref: torch.Tensor, max_frac: float = 1e-3) -> None:
    """Within one grey level everywhere, and off by one on at most ``max_frac`` of the values.

    The second bound matters: a wrong rounding mode (round vs truncate) stays within one level but
    is off on a large fraction of pixels.
    """
    diff = (got.to(torch.float32) - ref.to(torch.float32)).abs()
    assert diff.max().item() <= 1.0, f"max difference {diff.max().item()} grey levels"
    frac = (diff > 0).float().mean().item()
    assert frac <= max_frac, f"{frac:.2e} of values differ by one level"


def per_image(imgs: torch.Tensor, fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(img, *(float(a[i]) for a in args)) for i, img in enumerate(imgs)])


def denorm(x: torch.Tensor) -> torch.Tensor:
    """Normalised crops back to grey levels (exact: the normalisation error is ~1e-5 of a level)."""
    m = torch.tensor(MEAN).view(3, 1, 1)
    s = torch.tensor(STD).view(3, 1, 1)
    return ((x * s + m) * 255.0).round()


def entry(**over) -> CropRecipe:
    """A validated CIFAR crop entry with every random op off, then ``over`` (dotted keys) applied."""
    cfg = OmegaConf.merge(OmegaConf.structured(AugmentationConfig), {"crop_size": 32})
    for key, value in over.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return CropRecipe.from_config(cfg)


def shipped(name: str, index: int) -> CropRecipe:
    aug = OmegaConf.load(AUG_DIR / name)[index]
    return CropRecipe.from_config(OmegaConf.merge(OmegaConf.structured(AugmentationConfig), aug))


def recipe(*entries: CropRecipe) -> Recipe:
    return Recipe(tuple(entries), MEAN, STD)


def torchvision_pipeline(r: CropRecipe) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same recipe as torchvision.transforms.v2 writes it (the reference in distribution)."""
    return torchvision_crop(r, MEAN, STD)


def group_params(r: Recipe, uniforms: torch.Tensor) -> tuple[B.CropGroup, B.Params]:
    (group,) = B.crop_groups(r)
    return group, B.params(group, uniforms)


# ------------------------------------------------------------------ 1. per op, fixed parameters
SPECIAL_BOXES_32 = [  # [top, left, h, w]: whole image, corners, edges, 1-px strips, tiny boxes
    [0, 0, 32, 32], [0, 0, 5, 3], [27, 29, 5, 3], [0, 31, 32, 1], [31, 0, 1, 32], [0, 0, 2, 2],
    [10, 0, 12, 32], [0, 12, 32, 9], [30, 30, 2, 2], [3, 4, 28, 27],
]


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [32, 20])
def test_resized_crop_matches_torchvision_cifar(cifar, interpolation, size, monkeypatch):
    """The dense form (tap matrices, what accelerators run; the CPU form is torchvision's own
    kernel) gives torchvision's crops bit for bit."""
    monkeypatch.setattr(B, "DENSE_DEVICE_TYPES", ("cpu",))
    imgs = cifar[:96]
    u = torch.rand(len(imgs), 22, dtype=torch.float64, generator=gen(1))
    boxes = B.crop_boxes(0.01 + 0.99 * u[:, :10], (u[:, 10:20] - 0.5) * 2.2, u[:, 20:], 32, 32)
    boxes[:len(SPECIAL_BOXES_32)] = torch.tensor(SPECIAL_BOXES_32)
    got = B.resized_crop(imgs, boxes, size, interpolation)
    mode = InterpolationMode(interpolation)
    ref = torch.stack([F.resized_crop(img, *b.tolist(), [size, size], interpolation=mode,
                                      antialias=True) for img, b in zip(imgs, boxes)])
    assert got.dtype == torch.float32 and got.shape == (len(imgs), 3, size, size)
    assert torch.equal(got, ref.float())


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 96, 40])
def test_resized_crop_matches_torchvision_imagenette(imagenette, interpolation, size, monkeypatch):
    """224 px, dense form: upscaled small boxes and downscaled large ones (antialias weights), at
    the borders, bit for bit."""
    monkeypatch.setattr(B, "DENSE_DEVICE_TYPES", ("cpu",))
    imgs = imagenette
    boxes = torch.tensor([
        [0, 0, 224, 224], [0, 0, 30, 40], [194, 184, 30, 40], [0, 100, 224, 124], [17, 0, 150, 90],
        [100, 201, 23, 23], [0, 0, 224, 1], [50, 60, 100, 160], [223, 0, 1, 224], [5, 7, 211, 199],
        [40, 40, 64, 64], [0, 0, 112, 224]])
    got = B.resized_crop(imgs, boxes, size, interpolation)
    mode = InterpolationMode(interpolation)
    ref = torch.stack([F.resized_crop(img, *b.tolist(), [size, size], interpolation=mode,
                                      antialias=True) for img, b in zip(imgs, boxes)])
    assert torch.equal(got, ref.float())


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resize_center_crop_matches_torchvision(cifar, imagenette, interpolation):
    """rrc disabled: short side to the crop size, then the central square (non-square inputs)."""
    mode = InterpolationMode(interpolation)
    assert torch.equal(B.resize_center_crop(cifar, 32, interpolation), cifar.to(torch.float32))
    for view in (imagenette[..., :, :160], imagenette[..., :150, :], imagenette):
        for size in (96, 32):
            got = B.resize_center_crop(view, size, interpolation)
            ref = F.center_crop(F.resize(view, [size], interpolation=mode, antialias=True),
                                [size, size])
            assert_levels(got, ref)


def test_colour_adjustments_match_torchvision(cifar):
    imgs = cifar[:128]
    x = imgs.to(torch.float32)
    factor = torch.linspace(0.0, 2.0, len(imgs))  # a different factor for every sample
    hue = torch.linspace(-0.5, 0.5, len(imgs))
    assert_levels(B.adjust_brightness(x, factor), per_image(imgs, F.adjust_brightness, factor))
    assert_levels(B.adjust_contrast(x, factor), per_image(imgs, F.adjust_contrast, factor))
    assert_levels(B.adjust_saturation(x, factor), per_image(imgs, F.adjust_saturation, factor))
    assert_levels(B.adjust_hue(x, hue), per_image(imgs, F.adjust_hue, hue))
    assert_levels(B.rgb_to_grayscale(x), F.rgb_to_grayscale(imgs, num_output_channels=3), 0.0)
    assert_levels(B.solarize(x), F.solarize(imgs, 128), 0.0)
    assert_levels(B.equalize(x), F.equalize(imgs), 0.0)
    assert_levels(B.hflip(x), F.horizontal_flip(imgs), 0.0)


def test_cpu_hue_wrap_is_remainder_on_the_hue_range():
    """The CPU replaces the hue's float remainder by 6 with a floor form: equal bit for bit on
    [-3, 13], including every float within 2**20 steps of the multiples of 6 and of the ends."""
    near = []
    for c in (-3.0, 6.0, 12.0, 13.0):
        bits = torch.tensor([c]).view(torch.int32)
        steps = torch.arange(1, 1 << 20, dtype=torch.int32)
        near += [(bits + steps).view(torch.float32), (bits - steps).view(torch.float32)]
    tiny = (torch.arange(1, 1 << 20, dtype=torch.int32) + (1 << 23)).view(torch.float32)
    k = torch.cat(near + [tiny, -tiny, torch.tensor([-3.0, 0.0, 6.0, 12.0, 13.0]),
                          torch.rand(1_000_000, generator=gen(0)) * 16 - 3])
    k = k[(k >= -3) & (k <= 13)]
    assert torch.equal(B._wrap_sextants(k.clone()), k.remainder(6.0))


def test_gaussian_blur_matches_torchvision(cifar, imagenette):
    for imgs in (cifar[:64], imagenette):
        k = blur_kernel(imgs.shape[-1])  # 3 at 32 px, 23 at 224 px
        sigma = torch.linspace(0.1, 2.0, len(imgs))
        got = B.gaussian_blur(imgs.to(torch.float32), k, sigma)
        ref = torch.stack([F.gaussian_blur(img, [k, k], [float(s), float(s)])
                           for img, s in zip(imgs, sigma)])
        assert_levels(got, ref)


def test_normalize_matches_torchvision(cifar):
    got = B.normalize(cifar.to(torch.float32), MEAN, STD)
    ref = F.normalize(F.to_dtype(cifar, torch.float32, scale=True), list(MEAN), list(STD))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert got.is_contiguous()


def test_identity_coefficients_leave_images_unchanged(cifar, imagenette):
    """An op a sample does not take runs with identity coefficients instead of being skipped: a
    hue shift of 0, a blend ratio of 1 and a delta blur kernel must return every grey level."""
    for imgs in (cifar, imagenette):
        x = imgs.to(torch.float32)
        zero, one = torch.zeros(len(x)), torch.ones(len(x))
        assert torch.equal(B.adjust_hue(x, zero), x)
        assert torch.equal(B.blend(x, one, zero, zero), x)
        k = blur_kernel(x.shape[-1])
        delta = torch.zeros(len(x), k)
        delta[:, k // 2] = 1.0
        assert torch.equal(B.blur_with(x, B.blur_matrices(delta, x.shape[-1])), x)


def test_recipe_apply_equals_torchvision_chain(cifar):
    """Every op on, the parameters the recipe draws: ``apply`` equals v2's functional ops run on
    each image in the recipe's order with those parameters."""
    r = recipe(entry(color_jitter__prob=1.0, grayscale__prob=0.5, gaussian_blur__prob=0.5,
                     solarization__prob=0.5, equalization__prob=0.3, horizontal_flip__prob=0.5))
    imgs = cifar[:128]
    mc = B.BatchedMultiCrop(r)
    uniforms = mc.draw(len(imgs), gen(7))
    got = denorm(mc.apply(imgs, uniforms)[0])
    _, p = group_params(r, uniforms)
    values, coins = p.values[0], p.coins[0]
    boxes = B.crop_boxes(values[:, B.SCALE], values[:, B.LOG_RATIO], values[:, B.OFFSET], 32, 32)
    factors, order = p.factors[0], p.order[0]
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    ref = []
    for i, img in enumerate(imgs):
        y = F.resized_crop(img, *boxes[i].tolist(), [32, 32], interpolation=InterpolationMode.BICUBIC,
                           antialias=True)
        if coins[i, 0]:
            for k in order[i].tolist():
                y = adjust[k](y, float(factors[i, k].float()))
        if coins[i, 1]:
            y = F.rgb_to_grayscale(y, num_output_channels=3)
        if coins[i, 2]:
            y = F.gaussian_blur(y, [3, 3], [float(values[i, B.SIGMA])] * 2)
        if coins[i, 3]:
            y = F.solarize(y, 128)
        if coins[i, 4]:
            y = F.equalize(y)
        if coins[i, 5]:
            y = F.horizontal_flip(y)
        ref.append(y)
    ref = torch.stack(ref).to(torch.float32)
    diff = (got - ref).abs()
    # Single-level differences (closed-form hue, blur in float64) can move by a few levels through
    # later contrast or equalization; the order or a wrong mask would change most pixels.
    assert (diff > 1).float().mean().item() < 2e-3, diff.max()
    assert diff.mean().item() < 0.02


# -------------------------------------------------------------------- 2. colour jitter order
def test_colour_jitter_order_matches_torchvision(cifar):
    """All 24 orders through the six-slot schedule equal v2's adjustments applied in that order."""
    imgs = cifar[:96]
    n = len(imgs)
    perms = torch.tensor(list(itertools.permutations(range(4))))
    order = perms[torch.arange(n) % 24]
    t = torch.linspace(0.0, 1.0, n)
    factors = torch.stack([0.6 + 0.8 * t, 1.4 - 0.8 * t, 0.6 + 0.8 * t.flip(0), 0.2 * t - 0.1], 1)
    got = B.color_jitter(imgs.to(torch.float32), factors, order)
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    ref = []
    for i, img in enumerate(imgs):
        for k in order[i].tolist():
            img = adjust[k](img, float(factors[i, k]))
        ref.append(img)
    ref = torch.stack(ref).to(torch.float32)
    diff = (got - ref).abs()
    assert diff.max().item() <= 2 and (diff > 0).float().mean().item() < 1e-3
    # Negative control: one fixed order for everyone is far off, so the check sees the order.
    fixed = B.color_jitter(imgs.to(torch.float32), factors, perms[:1].expand(n, 4))
    assert (fixed != ref).float().mean().item() > 0.05
    # An adjustment that is off (identity factor) is the same as skipping it.
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(n, 4).clone()
    identity[:, 0] = factors[:, 0]
    only_b = B.color_jitter(imgs.to(torch.float32), identity, order)
    assert torch.equal(only_b, B.adjust_brightness(imgs.to(torch.float32), factors[:, 0]))


# ------------------------------------------------------- 3. distributions vs torchvision.transforms.v2
def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


KS_CRIT = 1.95 * math.sqrt(2.0 / N_DRAWS)  # two-sample KS at alpha = 0.001


def _box_stats(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    top, left, h, w = boxes.T.astype(np.float64)
    return {"area": h * w / (height * width), "log_aspect": np.log(w / h),
            "center_y": (top + h / 2) / height, "center_x": (left + w / 2) / width}


@pytest.mark.parametrize("name,height,width", [
    ("asymmetric.yaml", 32, 32), ("symmetric.yaml", 32, 32), ("asymmetric.yaml", 24, 64)])
def test_crop_boxes_match_torchvision_distribution(name, height, width):
    """Area fraction, aspect ratio and position of the boxes: same distribution as
    v2.RandomResizedCrop's (24 x 64 also exercises the central fallback)."""
    r = shipped(name, 0)
    _, p = group_params(recipe(r), B.BatchedMultiCrop(recipe(r)).draw(N_DRAWS, gen(3)))
    v = p.values[0]
    boxes = B.crop_boxes(v[:, B.SCALE], v[:, B.LOG_RATIO], v[:, B.OFFSET], height, width).numpy()
    rrc = v2.RandomResizedCrop(r.size, scale=r.scale, ratio=ASPECT_RATIO)
    torch.manual_seed(3)
    img = torch.zeros(3, height, width, dtype=torch.uint8)
    ref = np.array([list(rrc.make_params([img]).values()) for _ in range(N_DRAWS)])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()
    got, want = _box_stats(boxes, height, width), _box_stats(ref, height, width)
    for key in got:
        d = _ks(got[key], want[key])
        q = np.quantile(got[key], [0.05, 0.5, 0.95]), np.quantile(want[key], [0.05, 0.5, 0.95])
        assert d < KS_CRIT, f"{key}: KS {d:.3f} >= {KS_CRIT:.3f}; quantiles {q[0]} vs {q[1]}"


def test_boxes_follow_v2_rule_exactly():
    """Given the same raw draws, the vectorised rule picks v2's box (first fitting try, else the
    central fallback), including Python's half-to-even rounding; for one size and for per-image
    sizes (the DataLoader path)."""
    n, ratio, scale = 3000, ASPECT_RATIO, (0.3, 1.0)
    g = gen(11)
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 10, dtype=torch.float64, generator=g)
    r = math.log(ratio[0]) + math.log(ratio[1] / ratio[0]) * torch.rand(n, 10, dtype=torch.float64,
                                                                          generator=g)
    u = torch.rand(n, 2, dtype=torch.float64, generator=g)
    heights = torch.where(torch.arange(n) % 2 == 0, 24, 64)
    widths = torch.where(torch.arange(n) % 2 == 0, 64, 20)
    fallbacks = 0
    for got, hs, ws in ((B.crop_boxes(s, r, u, 24, 64), [24] * n, [64] * n),
                        (B.crop_boxes(s, r, u, heights, widths), heights.tolist(), widths.tolist())):
        for i in range(n):
            height, width = hs[i], ws[i]
            for t in range(10):  # v2.RandomResizedCrop.make_params, with these draws
                target = height * width * float(s[i, t])
                aspect = math.exp(float(r[i, t]))
                w = int(round(math.sqrt(target * aspect)))
                h = int(round(math.sqrt(target / aspect)))
                if 0 < w <= width and 0 < h <= height:
                    top = math.floor(float(u[i, 0]) * (height - h + 1))
                    left = math.floor(float(u[i, 1]) * (width - w + 1))
                    break
            else:
                fallbacks += 1
                if width / height > ratio[1]:
                    h, w = height, int(round(height * ratio[1]))
                elif width / height < ratio[0]:
                    h, w = int(round(width / ratio[0])), width
                else:
                    h, w = height, width
                top, left = (height - h) // 2, (width - w) // 2
            assert got[i].tolist() == [top, left, h, w], i
    assert fallbacks > 20  # the fallbacks (wide and tall) were exercised


def _ks_uniform(x: torch.Tensor, lo: float, hi: float) -> float:
    """One-sample KS statistic of ``x`` against U[lo, hi]."""
    u = np.sort((x.double().numpy() - lo) / (hi - lo))
    n = len(u)
    return float(max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max()))


def test_drawn_parameters_follow_the_recipe():
    """Coins at the recipe's probabilities, jitter factors and blur sigma uniform over v2's
    ranges, the jitter order uniform over the 24 permutations."""
    r = entry(color_jitter__prob=0.8, color_jitter__contrast=0.3, grayscale__prob=0.2,
              gaussian_blur__prob=0.5, gaussian_blur__sigma_min=0.3, gaussian_blur__sigma_max=1.7,
              solarization__prob=0.2, equalization__prob=0.1, horizontal_flip__prob=0.5)
    jitter = v2.ColorJitter(r.brightness, r.contrast, r.saturation, r.hue)
    assert r.jitter_ranges == (tuple(jitter.brightness), tuple(jitter.contrast),
                               tuple(jitter.saturation), tuple(jitter.hue))
    _, p = group_params(recipe(r), B.BatchedMultiCrop(recipe(r)).draw(N_DRAWS, gen(4)))
    probs = (r.jitter_prob, r.gray_prob, r.blur_prob, r.solarize_prob, r.equalize_prob, r.flip_prob)
    for k, prob in enumerate(probs):
        rate = p.coins[0, :, k].float().mean().item()
        assert abs(rate - prob) < Z * math.sqrt(prob * (1 - prob) / N_DRAWS), (k, rate, prob)
    crit = 1.95 / math.sqrt(N_DRAWS)  # one-sample KS at alpha = 0.001
    values = p.values[0]
    draws = [*(values[:, B.FACTORS.start + k] for k in range(4)), values[:, B.SIGMA]]
    for x, (lo, hi) in zip(draws, [*r.jitter_ranges, r.sigma]):
        assert lo <= x.min().item() and x.max().item() <= hi
        assert _ks_uniform(x, lo, hi) < crit, (lo, hi)
    order = p.order[0]
    counts = torch.unique(order, dim=0, return_counts=True)[1].double()
    assert len(counts) == 24 and (order.sort(dim=1).values == torch.arange(4)).all()
    chi2 = ((counts - N_DRAWS / 24) ** 2 / (N_DRAWS / 24)).sum().item()
    assert chi2 < 49.7, chi2  # chi-square, 23 degrees of freedom, alpha = 0.001


def _crop_stats(crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return crops.mean(dim=(2, 3)).numpy(), crops.std(dim=(2, 3)).numpy()


def _is_gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] == x[:, 1]).all(dim=(1, 2)) & (x[:, 1] == x[:, 2]).all(dim=(1, 2))


@pytest.mark.parametrize("index", [0, 1])
def test_output_statistics_match_torchvision(cifar, index):
    """Per-channel mean and std of the normalised crops and the grayscale rate, for each entry of
    the BYOL recipe (jitter, grayscale, solarization, flip), over 4000 draws of real CIFAR-10
    images, against v2's transforms of the same entry."""
    r = shipped("asymmetric.yaml", index)
    batch = cifar.repeat(N_DRAWS // len(cifar), 1, 1, 1)
    got = B.BatchedMultiCrop(recipe(r))(batch, gen(5))[0]
    transform = torchvision_pipeline(r)
    torch.manual_seed(5)
    ref = torch.stack([transform(img) for img in batch])
    assert got.shape == ref.shape and got.dtype == ref.dtype == torch.float32
    for a, b, name in zip(_crop_stats(got), _crop_stats(ref), ("mean", "std")):
        se = np.sqrt(a.var(axis=0) / len(a) + b.var(axis=0) / len(b))
        z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
        assert (z < Z).all(), f"per-channel {name}: z = {z}"
    gray_got = _is_gray(denorm(got)).float().mean().item()
    gray_ref = _is_gray(denorm(ref)).float().mean().item()
    se = math.sqrt(gray_got * (1 - gray_got) / len(got) + gray_ref * (1 - gray_ref) / len(ref))
    assert abs(gray_got - gray_ref) < Z * se, (gray_got, gray_ref)


def _solar(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 128, 255 - x, x)


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a == b).all(dim=(1, 2, 3))


# op -> (recipe keys, p, coin column, is the op visible on image x?, did it happen (x -> y)?)
FREQUENCY_CASES = {
    "flip": ({"horizontal_flip.prob": 0.5}, 0.5, 5,
             lambda x: ~_same(x, x.flip(-1)), lambda x, y: _same(y, x.flip(-1))),
    "grayscale": ({"grayscale.prob": 0.2}, 0.2, 1,
                  lambda x: ~_is_gray(x), lambda x, y: _is_gray(y)),
    "solarization": ({"solarization.prob": 0.2}, 0.2, 3,
                     lambda x: ~_same(x, _solar(x)), lambda x, y: _same(y, _solar(x))),
    "color_jitter": ({"color_jitter.prob": 0.8}, 0.8, 0,
                     lambda x: torch.ones(len(x), dtype=torch.bool), lambda x, y: ~_same(x, y)),
    "gaussian_blur": ({"gaussian_blur.prob": 0.3, "gaussian_blur.sigma_min": 1.0}, 0.3, 2,
                      lambda x: x.amax(dim=(1, 2, 3)) > x.amin(dim=(1, 2, 3)),
                      lambda x, y: ~_same(x, y)),
    "equalization": ({"equalization.prob": 0.3}, 0.3, 4,
                     lambda x: ~_same(x, B.equalize(x)), lambda x, y: ~_same(x, y)),
}


@pytest.mark.parametrize("op", list(FREQUENCY_CASES))
def test_op_frequencies_match_probability(cifar, op):
    """Each random op alone (no crop: resizing 32 px to 32 px is the identity), detected in the
    output of the batched recipe and of v2's transforms: both apply it with the configured
    probability, and the batched one exactly where its drawn coin says."""
    keys, p, column, visible, happened = FREQUENCY_CASES[op]
    r = entry(rrc__enabled=False, **{k.replace(".", "__"): v for k, v in keys.items()})
    batch = cifar.repeat(N_DRAWS // len(cifar), 1, 1, 1)
    x = batch.to(torch.float32)
    seen = visible(x)  # images on which the op would change nothing are not counted
    n = int(seen.sum())
    assert n > 0.9 * len(batch)
    mc = B.BatchedMultiCrop(recipe(r))
    uniforms = mc.draw(len(batch), gen(9))
    got = happened(x, denorm(mc.apply(batch, uniforms)[0]))
    transform = torchvision_pipeline(r)
    torch.manual_seed(9)
    ref = happened(x, denorm(torch.stack([transform(img) for img in batch])))
    se = math.sqrt(p * (1 - p) / n)
    for name, hits in (("batched", got), ("torchvision", ref)):
        rate = hits[seen].float().mean().item()
        assert abs(rate - p) < Z * se, f"{op} {name}: rate {rate:.3f}, p {p}"
    _, params = group_params(recipe(r), uniforms)
    assert torch.equal(got[seen], params.coins[0, :, column][seen])


# ------------------------------------------------------------------------------ 4. determinism
def test_same_seed_same_crops_and_resume(cifar):
    entries = tuple(CropRecipe.from_config(OmegaConf.merge(OmegaConf.structured(AugmentationConfig),
                                                           a))
                    for a in OmegaConf.load(AUG_DIR / "asymmetric.yaml"))
    mc = B.BatchedMultiCrop(recipe(*entries))
    x = cifar[:128]
    a = mc(x, gen(0))
    b = mc(x, gen(0))
    assert len(a) == 2 and all(torch.equal(u, v) for u, v in zip(a, b))
    c = mc(x, gen(1))
    assert not any(torch.equal(u, v) for u, v in zip(a, c))
    g = gen(0)
    mc(x, g)
    state = g.get_state()
    second = mc(x, g)
    assert not torch.equal(second[0], a[0])  # the generator moved on
    g.set_state(state)  # a resumed run replays the batch exactly
    assert all(torch.equal(u, v) for u, v in zip(mc(x, g), second))
    cl = mc(x.contiguous(memory_format=torch.channels_last), gen(0))
    for u, v in zip(cl, a):
        assert torch.equal(u, v) and u.is_contiguous() and u.dtype == torch.float32


def test_asymmetric_recipe_stacks_crops_with_their_own_parameters(cifar):
    """Two entries with different blur/solarization (BYOL style) and sizes: crops come in entry
    order with each entry's own probabilities; crops of one size run as one stacked pass."""
    first = entry(gaussian_blur__prob=1.0, num_crops=1)
    second = entry(gaussian_blur__prob=0.1, solarization__prob=0.2, num_crops=2, crop_size=24)
    third = entry(solarization__prob=0.5, num_crops=1)
    r = recipe(first, second, third)
    mc = B.BatchedMultiCrop(r)
    assert mc.num_crops == 4
    assert [g.crops for g in mc.groups] == [(0, 3), (1, 2)]
    uniforms = mc.draw(N_DRAWS, gen(2))
    by_crop = {}
    for group in mc.groups:
        p = B.params(group, uniforms[list(group.crops)])
        by_crop.update({c: p.coins[i] for i, c in enumerate(group.crops)})
    assert by_crop[0][:, 2].all() and not by_crop[0][:, 3].any()
    for c, blur, solar in ((1, 0.1, 0.2), (2, 0.1, 0.2), (3, 0.0, 0.5)):
        for k, prob in ((2, blur), (3, solar)):
            rate = by_crop[c][:, k].float().mean().item()
            assert abs(rate - prob) <= Z * math.sqrt(prob * (1 - prob) / N_DRAWS), (c, k, rate)
    crops = mc(cifar[:64], gen(2))
    assert [tuple(c.shape) for c in crops] == [(64, 3, 32, 32), (64, 3, 24, 24), (64, 3, 24, 24),
                                               (64, 3, 32, 32)]
    # each stacked crop equals the recipe run on that crop alone, with the same uniforms
    u = mc.draw(64, gen(8))
    together = mc.apply(cifar[:64], u)
    for c, alone in enumerate((first, second, second, third)):
        solo = dataclasses.replace(alone, num_crops=1)
        assert torch.equal(B.BatchedMultiCrop(recipe(solo)).apply(cifar[:64], u[c:c + 1])[0],
                           together[c])


def test_dataloader_and_device_paths_make_the_same_crops(cifar, imagenette):
    """The DataLoader path (``apply_images``: images of any size, torchvision's resized crop per
    image when sizes differ) and the batched crop give the same crops for the same uniforms."""
    r = recipe(entry(color_jitter__prob=0.8, grayscale__prob=0.2, horizontal_flip__prob=0.5,
                     num_crops=2, crop_size=32))
    mc = B.BatchedMultiCrop(r)
    small = list(cifar[:8])
    big = list(imagenette[:4])
    u = mc.draw(12, gen(3))
    mixed = mc.apply_images(small + big, u)
    alone_small = mc.apply(torch.stack(small), u[:, :8])
    alone_big = mc.apply(torch.stack(big), u[:, 8:])
    for c in range(2):
        assert torch.equal(mixed[c][:8], alone_small[c])
        assert torch.equal(mixed[c][8:], alone_big[c])
    assert all(torch.equal(a, b) for a, b in zip(mc.apply_images(small, u[:, :8]), alone_small))


def test_a_later_batch_leaves_the_crops_of_an_earlier_one_alone(cifar, imagenette):
    """The CPU reuses one scratch batch for the crops of every call: the crops a call returns
    must not live in it, or the next call would overwrite them."""
    r = recipe(entry(color_jitter__prob=0.8, grayscale__prob=0.2, horizontal_flip__prob=0.5,
                     num_crops=2),
               entry(rrc__enabled=False, crop_size=24))
    mc = B.BatchedMultiCrop(r)
    for images in (list(cifar[:16]), list(imagenette[:4])):
        u = mc.draw(len(images), gen(5))
        first = mc.apply_images(images, u)
        kept = [c.clone() for c in first]
        mc.apply_images(images[::-1], mc.draw(len(images), gen(6)))
        mc.apply(torch.stack(images[::-1]), mc.draw(len(images), gen(7)))
        assert all(torch.equal(a, b) for a, b in zip(first, kept))
        assert all(torch.equal(a, b) for a, b in zip(mc.apply_images(images, u), kept))


def _collate_in_worker(collate: RecipeCollate, samples: list) -> list:
    crops = collate(samples)[1]
    return [crops, [c.is_shared() for c in crops]]


def test_a_worker_hands_its_crops_over_in_shared_memory(cifar):
    """Inside a DataLoader worker the collate function writes the crops into shared memory, so
    sending them to the training process copies nothing; the crops are those made in-process."""
    r = recipe(entry(color_jitter__prob=0.8, grayscale__prob=0.2, num_crops=2))
    collate = RecipeCollate(r)
    samples = [(i, (cifar[i], torch.rand(2, B.DRAWS, dtype=torch.float64, generator=gen(i))), 0)
               for i in range(8)]
    loader = torch.utils.data.DataLoader([samples], batch_size=None, num_workers=1,
                                         collate_fn=functools.partial(_collate_in_worker, collate))
    (crops, shared), = list(loader)
    assert shared == [True, True]
    assert not any(c.is_shared() for c in collate(samples)[1])  # no worker: ordinary memory
    assert all(torch.equal(a, b) for a, b in zip(crops, collate(samples)[1]))


def test_recipe_is_built_from_the_validated_config_alone():
    """Every field comes from the schema's keys (a default changed there reaches every path)."""
    cfg = OmegaConf.merge(OmegaConf.structured(AugmentationConfig), {"crop_size": 24})
    r = CropRecipe.from_config(cfg)
    assert r.scale == (float(cfg.rrc.crop_min_scale), float(cfg.rrc.crop_max_scale))
    cfg.rrc.crop_min_scale = 0.3
    assert CropRecipe.from_config(cfg).scale[0] == 0.3
    given = OmegaConf.create({"crop_size": 24, "rrc": {"ratio": [0.5, 2.0]}})
    with pytest.raises(ConfigError, match="rrc.ratio"):  # not a key: no path could honour it
        validate(given, AugmentationConfig)


def test_bad_batches():
    mc = B.BatchedMultiCrop(recipe(entry()))
    with pytest.raises(TypeError):
        mc(torch.zeros(2, 3, 32, 32), gen(0))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            mc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.Generator(device="cuda"))


def test_a_compiled_recipe_runs_its_cpu_form_eagerly_on_the_cpu(cifar):
    """Only the dense form compiles (the CPU form crops image by image); a compiled recipe given
    CPU batches keeps making the eager crops, from the second batch on too."""
    r = recipe(entry(color_jitter__prob=0.8, grayscale__prob=0.2, num_crops=2))
    compiled, eager = B.BatchedMultiCrop(r, "inductor"), B.BatchedMultiCrop(r)
    x = cifar[:32]
    u = compiled.draw(len(x), gen(8))
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(compiled.apply(x, u), eager.apply(x, u)))


def test_apply_compiles_as_one_graph_and_gives_the_same_crops(cifar, monkeypatch):
    """``torch.compile(fullgraph=True, dynamic=False)`` accepts ``apply`` in the form accelerators
    run (no graph break, no host synchronisation: either would fail the capture) and the compiled
    crops equal the eager ones. The AOT-eager backend traces what inductor would receive without
    generating code."""
    monkeypatch.setattr(B, "DENSE_DEVICE_TYPES", ("cpu",))
    entries = tuple(CropRecipe.from_config(OmegaConf.merge(OmegaConf.structured(AugmentationConfig),
                                                           a))
                    for a in OmegaConf.load(AUG_DIR / "asymmetric.yaml"))
    eager = B.BatchedMultiCrop(recipe(*entries))
    compiled = B.BatchedMultiCrop(recipe(*entries), compile_backend="aot_eager")
    x = cifar[:64]
    for seed in (0, 1):  # the first batch runs eagerly and builds the tables, the second compiled
        u = eager.draw(len(x), gen(seed))
        assert all(torch.equal(a, b) for a, b in zip(compiled.apply(x, u), eager.apply(x, u)))
    assert compiled._warm


def test_accelerator_form_of_a_cifar_batch_is_one_draw_and_at_most_150_ops(cifar):
    """Launch-light: the dense form of CIFAR-10's asymmetric two-crop recipe on a batch draws its
    randomness once and issues at most 150 computing aten ops (kernels on a GPU) whatever the
    batch size; 960 before the crops were stacked, the resize and blur made dense products and
    the jitter generic blends."""
    entries = tuple(CropRecipe.from_config(OmegaConf.merge(OmegaConf.structured(AugmentationConfig),
                                                           a))
                    for a in OmegaConf.load(AUG_DIR / "asymmetric.yaml"))
    mc = B.BatchedMultiCrop(recipe(*entries))
    small, large = eager_ops(mc, cifar[:16]), eager_ops(mc, cifar[:128])
    assert small == large
    assert small["rand"] == 1 and sum(small.values()) <= 150, small


def test_cpu_form_and_accelerator_form_make_the_same_crops(cifar, imagenette, monkeypatch):
    """The CPU runs torchvision's resize per image, subsets and chunks; accelerators the dense
    matrix products and whole-batch ops with identity coefficients. Forced onto the CPU, the dense
    form gives the same crops: bit for bit, except the blur (float32 shifted adds against float64
    products, and taps beyond 5 sigma left out on the CPU), within one level on a few pixels."""
    r = recipe(entry(color_jitter__prob=0.8, grayscale__prob=0.2, solarization__prob=0.2,
                     equalization__prob=0.1, horizontal_flip__prob=0.5, num_crops=2),
               entry(gaussian_blur__prob=0.5, crop_size=24))
    for x in (cifar[:64], imagenette[:6]):
        mc = B.BatchedMultiCrop(r)
        u = mc.draw(len(x), gen(4))
        cpu = mc.apply(x, u)
        monkeypatch.setattr(B, "DENSE_DEVICE_TYPES", ("cpu",))
        accelerator = mc.apply(x, u)
        monkeypatch.undo()
        assert torch.equal(cpu[0], accelerator[0]) and torch.equal(cpu[1], accelerator[1])
        assert_levels(denorm(cpu[2]), denorm(accelerator[2]), 2e-3)
