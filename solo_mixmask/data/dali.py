"""Pretraining batches from NVIDIA DALI (``data.format: dali``).

The pipeline reads the ImageFolder tree that the torchvision path reads (the same ``scan_image_folder``
order, so an index means the same image on both paths), decodes on the GPU (``mixed``) when one is
used and on the CPU otherwise, and applies each entry of the :class:`~.recipe.Recipe` ``num_crops``
times. Batches have the torchvision path's format, ``[indexes, [crop_1..crop_n], targets]``.

The reader gets every file with its dataset index as its label, so a batch carries the real indexes
and the targets are looked up from them. Files are sharded over the ranks of a DDP run, and the whole
list is reshuffled after every epoch with the same order on every rank, so each image is seen once per
epoch over all ranks. The last partial batch is dropped and every rank yields the same number of
batches (a DDP run must take the same number of steps everywhere).

The graph translates the recipe op by op, with torchvision.transforms.v2's semantics written out in
DALI arithmetic where DALI's own operator means something else: v2's crop-window rule (ten tries,
central fallback), the crop cut out before resizing and resized one axis at a time with a uint8
rounding in between (torch's CPU kernel), the colour-jitter adjustments in a random order per sample,
torchvision's grey (weights 0.2989/0.587/0.114, truncated) in grayscale, contrast and saturation,
truncation wherever torchvision truncates, and the HSV hue rotation. What cannot be made equal is
listed and measured in docs/speed.md, "DALI and the recipe".
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .datasets import ImageList, scan_image_folder
from .recipe import ASPECT_RATIO, CROP_TRIES, CropRecipe, Recipe
from .sources import check_images, training_rows
from .spec import LoaderSpec

DALI_MISSING = "data.format=dali needs NVIDIA DALI: pip install 'solo-mixmask[dali]'"
#: torchvision's ``rgb_to_grayscale`` weights (not ITU-R 601's 0.299, which DALI's GRAY uses)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: the colour-jitter orders a sample can draw (v2's ``randperm(4)``): all 24, equally likely
JITTER_ORDERS = tuple(itertools.permutations(range(4)))
Node = Any  # a DALI DataNode


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


# ----------------------------------------------------------------------------------- pixel ops
# Each op takes and returns uint8 HWC pixels and computes in float32, re-quantised as torchvision
# re-quantises its uint8 result: clamped and truncated (``floor`` then a saturating cast, since
# DALI's cast rounds). Every DALI operator costs per sample, so the ops are written with few of them
# (``coord_transform`` for the per-pixel linear maps).


def _trunc_u8(y: Node) -> Node:
    """float -> uint8 as torchvision's ``clamp(0, 255).to(uint8)``: floor, then a saturating cast."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    return fn.cast(dmath.floor(y), dtype=types.UINT8)


def _luma(x: Node) -> Node:
    """torchvision's grey of uint8 pixels, floored (float HW1): what grayscale outputs and what
    contrast (its mean) and saturation blend with."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    return dmath.floor(fn.coord_transform(x, M=list(GRAY_WEIGHTS), dtype=types.FLOAT))


def _blend(x: Node, other: Node, f: Node) -> Node:
    """torchvision's ``_blend`` on uint8: ``x * f + other * (1 - f)``, clamped, truncated."""
    return _trunc_u8(x * f + other * (1.0 - f))


def adjust_brightness(x: Node, f: Node) -> Node:
    return _trunc_u8(x * f)


def adjust_contrast(x: Node, f: Node) -> Node:
    """Blend with the mean of the floored grey of each image."""
    import nvidia.dali.fn as fn

    return _blend(x, fn.reductions.mean(_luma(x)), f)


def adjust_saturation(x: Node, f: Node) -> Node:
    """Blend with the floored grey."""
    return _blend(x, _luma(x), f)


def adjust_hue(x: Node, shift: Node) -> Node:
    """v2's hue adjustment: the HSV rotation, then v2's float->uint8 (``trunc(v * 255.999)``)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    y = _hsv_hue_shift(fn.cast(x, dtype=types.FLOAT), shift)
    return _trunc_u8(y * ((256.0 - 1e-3) / 255.0))


def rgb_to_grayscale(x: Node) -> Node:
    """``F.rgb_to_grayscale(x, 3)``: the truncated grey in all three channels."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    g = fn.cast(_luma(x), dtype=types.UINT8)  # whole levels, exact
    return fn.coord_transform(g, M=[1, 1, 1], dtype=types.UINT8)  # HW1 -> HW3


def gaussian_blur(x: Node, kernel_size: int, sigma: Node) -> Node:
    """``F.gaussian_blur`` with v2's kernel and reflect padding; uint8 in and out, rounded (DALI
    rounds its uint8 output, as v2 does)."""
    import nvidia.dali.fn as fn

    return fn.gaussian_blur(x, window_size=kernel_size, sigma=sigma)


def solarize(x: Node) -> Node:
    """``F.solarize(x, 128)``: levels at or above 128 inverted (int32 arithmetic, exact)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    return fn.cast(x + (x >= 128) * (255 - 2 * x), dtype=types.UINT8)


def _hsv_hue_shift(x: Node, shift: Node) -> Node:
    """torchvision's HSV hue shift on float HWC pixels in [0, 255]; ``shift`` in turns.

    Channel ``n`` of the result is ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``v`` the max,
    ``c`` the chroma and ``k = (n + h6 + 6 * shift) mod 6`` (``h6``: the hue in sextants, from
    the first channel, in r, g, b order, that holds the max). Plain arithmetic on channel slices:
    on the CPU it costs less per sample than DALI's reductions and ``coord_transform``.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath

    r, g, b = x[:, :, 0:1], x[:, :, 1:2], x[:, :, 2:3]
    v = dmath.max(dmath.max(r, g), b)
    c = v - dmath.min(dmath.min(r, g), b)
    is_r = r == v
    is_g = (g == v) & (r != v)
    is_b = (r != v) & (g != v)
    h6 = (is_r * (g - b) + is_g * (2.0 * c + b - r) + is_b * (4.0 * c + r - g)) / dmath.max(c, 1e-6)
    h6 = h6 + shift * 6.0
    k = fn.cat(h6 + 17.0, h6 + 15.0, h6 + 13.0, axis=2)  # n + 12 + h6 > 0 before the modulo
    k = k - dmath.floor(k * (1.0 / 6.0)) * 6.0
    return v - c * dmath.clamp(dmath.min(k, 4.0 - k), 0.0, 1.0)


JITTER_OPS: tuple[Callable[[Node, Node], Node], ...] = (
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


NO_OP = -1  # a jitter round in which a sample applies nothing


def jitter_plan(enabled: Sequence[bool]) -> tuple[tuple[bool, ...], tuple[tuple[int, ...], ...]]:
    """The rounds that apply the jitter adjustments in any of ``JITTER_ORDERS``.

    Returns ``(is_hue, steps)``: ``is_hue[i]`` tells whether round ``i`` is the hue rotation (every
    sample applies it, once), otherwise the round applies one blend (brightness 0, contrast 1,
    saturation 2) per sample; ``steps[p][i]`` is the adjustment order ``p`` applies in round ``i``
    (``NO_OP``: none). With hue on, the blends a sample's order puts before hue run in the rounds
    before it and the others after, so the expensive rotation runs once per sample, outside the
    rounds' conditionals. Disabled adjustments are skipped, as v2 skips a None range.
    """
    blends = sum(enabled[:3])
    is_hue = (False,) * blends + ((True,) + (False,) * blends if enabled[3] else ())
    steps = []
    for order in JITTER_ORDERS:
        wanted = [k for k in order if enabled[k]]
        cut = wanted.index(3) if enabled[3] else len(wanted)
        before, after = wanted[:cut], wanted[cut + 1:]
        row = before + [NO_OP] * (blends - len(before))
        if enabled[3]:
            row += [3] + after + [NO_OP] * (blends - len(after))
        steps.append(tuple(row))
    return is_hue, tuple(steps)


def _one_of(x: Node, step: Node, values: Sequence[int],
            ops: dict[int, tuple[Callable[[Node, Node], Node], Node]]) -> Node:
    """``op(x, factor)`` of ``ops[step]`` per sample (nothing for ``NO_OP``), ``step`` being one of
    the sorted ``values``: a balanced tree of DALI conditionals, two levels for four values."""
    if len(values) == 1:
        if values[0] != NO_OP:
            op, factor = ops[values[0]]
            x = op(x, factor)
        return x
    half = len(values) // 2
    if step < values[half]:
        x = _one_of(x, step, values[:half], ops)
    else:
        x = _one_of(x, step, values[half:], ops)
    return x


def _jitter(x: Node, r: CropRecipe, arg: Callable[[Node], Node]) -> Node:
    """v2.ColorJitter: each enabled adjustment with its factor drawn uniformly from its range, in
    a random order per sample (one of ``JITTER_ORDERS``, equally likely), as :func:`jitter_plan`
    lays it out in rounds."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    ops = {k: (op, arg(fn.random.uniform(range=rng)))
           for k, (op, rng) in enumerate(zip(JITTER_OPS, r.jitter_ranges)) if rng is not None}
    is_hue, steps = jitter_plan([k in ops for k in range(4)])
    keys = list(range(len(JITTER_ORDERS)))
    order = fn.random.uniform(values=keys, dtype=types.INT32)
    for i, hue in enumerate(is_hue):
        if hue:
            op, factor = ops[3]
            x = op(x, factor)
            continue
        values = sorted({row[i] for row in steps})
        step = fn.lookup_table(order, keys=keys, values=[float(row[i]) for row in steps],
                               dtype=types.INT32)
        x = _one_of(x, step, values, ops)
    return x


def _maybe(x: Node, p: float, op: Callable[[Node], Node]) -> Node:
    """``op(x)`` for a random ``p`` share of the samples (a DALI conditional)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    if fn.random.coin_flip(probability=p, dtype=types.BOOL):
        x = op(x)
    return x


# ---------------------------------------------------------------------------------- geometry
def _where(cond: Node, a: Node, b: Node) -> Node:
    return cond * (a - b) + b


def crop_window(shape: Node, r: CropRecipe) -> tuple[Node, Node]:
    """v2.RandomResizedCrop's window for images of ``shape`` (HWC): ``(anchor, size)``, int64
    ``[top, left]`` and ``[h, w]``.

    v2's rule in DALI arithmetic (DALI's ``random_crop_generator`` also rejects tries whose rounded
    aspect ratio leaves the range, and falls back to the whole image shrunk to the largest area):
    ``CROP_TRIES`` tries of area fraction ``U(scale)`` and log aspect ``U(log ASPECT_RATIO)``; the
    first whose rounded box fits wins, placed at ``floor(u * (H - h + 1))``; with no fitting try,
    the central box of aspect ratio clipped to the range. In float32 (v2 takes the square roots in
    float64: the rounding differs only for a size within 1e-7 of a half). Vector ops throughout:
    on the CPU every DALI operator costs about a microsecond per sample.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types

    hw = fn.cast(shape[0:2], dtype=types.FLOAT)
    height, width = hw[0], hw[1]
    target = fn.random.uniform(range=r.scale, shape=[CROP_TRIES]) * (height * width)
    aspect = dmath.exp(fn.random.uniform(range=r.log_ratio, shape=[CROP_TRIES]))
    w = dmath.floor(dmath.sqrt(target * aspect) + 0.5)
    h = dmath.floor(dmath.sqrt(target / aspect) + 0.5)
    fits = (dmath.min(w, h) > 0) & (w <= width) & (h <= height)
    tries = fn.constant(fdata=[float(t) for t in range(CROP_TRIES)], shape=[CROP_TRIES])
    first = fn.reductions.min(_where(fits, tries, float(CROP_TRIES)))
    found = first < CROP_TRIES
    chosen = tries == first  # one-hot at the first fitting try; all false without one
    lo, hi = ASPECT_RATIO
    # fallback: the whole image, its aspect ratio clipped to [lo, hi]
    fallback = fn.stack(dmath.min(height, dmath.floor(width / lo + 0.5)),
                        dmath.min(width, dmath.floor(height * hi + 0.5)))
    size = _where(found, fn.stack(fn.reductions.sum(chosen * h), fn.reductions.sum(chosen * w)),
                  fallback)
    room = hw - size
    u = fn.random.uniform(range=(0.0, 1.0), shape=[2])
    anchor = _where(found, dmath.min(dmath.floor(u * (room + 1.0)), room),
                    dmath.floor(room * 0.5))
    return fn.cast(anchor, dtype=types.INT64), fn.cast(size, dtype=types.INT64)


def _resize(x: Node, height: Node, out_h: Node, out_w: Node, interp: Any) -> Node:
    """Antialiased resize of ``x`` (``height`` rows) to ``out_h`` x ``out_w``: the width first,
    rounded to uint8, then the height, as torch's CPU uint8 kernel does (on CIFAR crops one pass
    leaves 23% of the values off torch's, two passes 6%)."""
    import nvidia.dali.fn as fn

    x = fn.resize(x, resize_x=out_w, resize_y=height, interp_type=interp, antialias=True)
    return fn.resize(x, resize_x=out_w, resize_y=out_h, interp_type=interp, antialias=True)


def _centre_crop_window(shape: Node, size: int) -> tuple[Node, Node, Node, Node]:
    """v2's ``Resize(size)`` then ``CenterCrop(size)``: the resized ``(h, w)`` (the short side to
    ``size``, the long one ``int(size * long / short)``) and the crop's ``[top, left]`` there,
    ``round((new - size) / 2)`` with Python's half-to-even rounding."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    height, width = shape[0], shape[1]
    taller = height >= width
    new_h = _where(taller, (size * height) // width, size)
    new_w = _where(taller, size, (size * width) // height)

    def offset(d: Node) -> Node:  # round(d / 2), half to even, for an integer d >= 0
        return d // 2 + (d % 4 == 3)

    anchor = fn.cast(fn.stack(offset(new_h - size), offset(new_w - size)), dtype=types.INT64)
    return new_h, new_w, anchor, height


def augment(images: Node, shape: Node, r: CropRecipe, recipe: Recipe,
            device: str) -> tuple[Node, Node, Node]:
    """One crop of entry ``r`` for every image (inside the pipeline graph): the normalised CHW
    float crop and its window in the source image, ``[top, left]`` and ``[h, w]`` (the whole image
    when ``rrc`` is off, as in the batched recipe). ``shape`` is the images' HWC shape (on the CPU).
    Pixels stay uint8 until the normalisation."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    def arg(node: Node) -> Node:
        return node.gpu() if device == "gpu" else node

    def f32(node: Node) -> Node:
        return fn.cast(node, dtype=types.FLOAT)

    interp = types.INTERP_CUBIC if r.interpolation == "bicubic" else types.INTERP_LINEAR
    if r.rrc:
        anchor, size = crop_window(shape, r)
        x = fn.slice(images, anchor, size, axes=[0, 1])  # the resize sees only the window
        x = _resize(x, f32(size[0]), float(r.size), float(r.size), interp)
    else:
        new_h, new_w, at, height = _centre_crop_window(shape, r.size)
        x = _resize(images, f32(height), f32(new_h), f32(new_w), interp)
        x = fn.slice(x, at, fn.constant(idata=[r.size, r.size], dtype=types.INT64), axes=[0, 1])
        anchor = fn.constant(idata=[0, 0], dtype=types.INT64)
        size = fn.cast(shape[0:2], dtype=types.INT64)

    def blur(y: Node) -> Node:
        return gaussian_blur(y, r.kernel_size, fn.random.uniform(range=r.sigma))

    steps: list[tuple[float, Callable[[Node], Node]]] = [
        (r.jitter_prob, lambda y: _jitter(y, r, arg)), (r.gray_prob, rgb_to_grayscale),
        (r.blur_prob, blur), (r.solarize_prob, solarize), (r.equalize_prob, fn.equalize)]
    for p, op in steps:
        if p > 0:
            x = _maybe(x, p, op)
    mirror = fn.random.coin_flip(probability=r.flip_prob) if r.flip_prob > 0 else 0
    crop = fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mirror=mirror,
                                    mean=[255.0 * m for m in recipe.mean],
                                    std=[255.0 * s for s in recipe.std])
    return crop, anchor, size


def build_pipeline(files: Sequence[str], labels: Sequence[int], recipe: Recipe, batch_size: int,
                   device: str, num_threads: int, seed: int, shard_id: int = 0,
                   num_shards: int = 1, device_id: Optional[int] = None, prefetch: int = 2,
                   windows: bool = False) -> Any:
    """A built DALI pipeline returning each crop (CHW float) and the reader label (the index);
    with ``windows``, each crop is followed by its window's anchor and size (for tests)."""
    import_dali()
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(enable_conditionals=True)
    def pretrain_pipeline():
        jpegs, labels_ = fn.readers.file(files=list(files), labels=list(labels), name="Reader",
                                         shard_id=shard_id, num_shards=num_shards,
                                         shuffle_after_epoch=True, pad_last_batch=True)
        # as torchvision's decode_image: RGB, EXIF orientation not applied
        images = fn.decoders.image(jpegs, device="mixed" if device == "gpu" else "cpu",
                                   output_type=types.RGB, adjust_orientation=False)
        shape = fn.peek_image_shape(jpegs, adjust_orientation=False)
        outputs = []
        for r in recipe.crops:
            crop, anchor, size = augment(images, shape, r, recipe, device)
            outputs += [crop, anchor, size] if windows else [crop]
        return (*outputs, labels_)

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


# ----------------------------------------------------------------------------------------- loader
class DALIPretrainLoader:
    """An iterable of pretraining batches with a length, for Lightning's ``fit``.

    The pipeline is built on the first iteration, once the process knows its rank (Lightning starts
    DDP ranks after the loaders exist). Not a ``DataLoader``, so Lightning never swaps its sampler.
    """

    def __init__(self, images: ImageList, indexes: Sequence[int], recipe: Recipe,
                 batch_size: int, device: str = "cpu",
                 num_threads: int = 2, seed: int = 0, shard: Optional[tuple[int, int]] = None,
                 num_nodes: int = 1, prefetch: int = 2) -> None:
        import_dali()
        self.images = images
        self.indexes = np.asarray(indexes, dtype=np.int64)
        self.targets = torch.as_tensor(images.targets, dtype=torch.long)
        self.recipe = recipe
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
        return self.recipe.num_crops

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
        pipe = build_pipeline(files, order.tolist(), self.recipe, self.batch_size, self.device,
                              self.num_threads, seed + 1000 * rank, rank, world, device_id,
                              self.prefetch)
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


def resolve_device(dali: Any, gpu: bool) -> str:
    """``dali.device``: ``auto`` decodes on the GPU when training uses one, ``gpu``/``cpu`` force."""
    want = str(dali.device)
    if want == "gpu" and not torch.cuda.is_available():
        raise ConfigError("dali.device=gpu needs a CUDA GPU; use dali.device=cpu or auto")
    if want == "auto":
        return "gpu" if gpu and torch.cuda.is_available() else "cpu"
    return want


def build_dali_pretrain_loader(spec: LoaderSpec) -> DALIPretrainLoader:
    """The ``data.format: dali`` training loader."""
    import_dali()
    device = resolve_device(spec.dali, spec.gpu)
    data = spec.data
    images = scan_image_folder(data.train_path, no_labels=bool(data.no_labels))
    good = set(check_images(images, str(data.train_path), data).paths)
    keep = np.array([i for i, p in enumerate(images.paths) if p in good], dtype=np.int64)
    keep = keep[training_rows([images.targets[i] for i in keep], data, spec.seed, spec.batch_size)]
    threads = spec.dali.threads or max(1, int(data.num_workers))
    return DALIPretrainLoader(images, keep, spec.recipe, spec.batch_size, device=device,
                              num_threads=int(threads), seed=spec.seed, num_nodes=spec.num_nodes)
