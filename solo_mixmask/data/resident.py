"""Device-resident small-image datasets: decode once, cache on disk, batch on the training device.

For CIFAR (32 px), Tiny-ImageNet (64 px), STL-10 (96 px) and small custom trees, per-sample decoding
in DataLoader workers costs more than the training step. Here every image is decoded once into one
uint8 array, cached on disk as ``.npy``, copied to the device as a single ``(N, 3, H, W)`` uint8
tensor, and each step's batch is gathered and augmented there, without worker processes.

Layout: images are always ``(N, 3, H, W)`` uint8 (channels first, as ``torchvision.io`` decodes and as
batched GPU augmentation consumes them); targets are ``(N,)`` int64, -1 for unlabeled images.

Order and resume: :class:`ResidentLoader` draws its order from an ``EpochSampler``
(``data/sampling.py``), the same as the file path's DataLoader: DistributedSampler's permutation and
sharding for ``(seed, epoch)``, the epoch set through ``loader.sampler.set_epoch`` (Lightning's hook),
the position (epoch, batches done) kept in checkpoints; each batch's crops come from a generator
seeded by ``(seed, epoch, rank, batch)``. A run resumed at an epoch or batch boundary therefore
repeats the uninterrupted run exactly. ``data.format: device`` in a pretraining config builds these
loaders (:func:`build_device_loaders`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import multiprocessing
import os
import sys
import tempfile
import warnings
import zlib
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from ..config.schema import DeviceDataConfig
from ..errors import DataError
from ..utils.streams import made_ahead
from .augmentations import build_eval_transform, to_normalised
from .batched import BatchedMultiCrop
from .datasets import ImageList, decode_image
from .sampling import EpochSampler, mix_seed
from .sources import image_source, training_rows
from .spec import LoaderSpec

#: ``data.device.max_bytes`` as the schema defaults it: N*H*W*3 uint8 values (= bytes on the device)
DEFAULT_MAX_PIXELS = DeviceDataConfig.max_bytes
CACHE_VERSION = 1

Transform = Callable[[torch.Tensor, torch.Generator], Sequence[torch.Tensor]]
ArrayLike = Union[np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------- decoding
def _resize_square(img: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (bicubic, antialiased), then the centre ``size`` x ``size`` crop."""
    if tuple(img.shape[-2:]) == (size, size):
        return img
    img = F.resize(img, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(img, [size, size])


def _decode_into(out: np.ndarray, paths: Sequence[str], start: int,
                 size: Optional[int]) -> Optional[tuple[str, int, Any]]:
    """Decodes ``paths`` into ``out[start:]``; the first problem as ``(kind, index, detail)``."""
    expected = tuple(out.shape[1:])
    for j, path in enumerate(paths):
        try:
            img = decode_image(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure names the file
            return ("corrupt", start + j, f"{type(exc).__name__}: {exc}".splitlines()[0])
        if size is not None:
            img = _resize_square(img, size)
        if tuple(img.shape) != expected:
            return ("size", start + j, tuple(img.shape[-2:]))
        out[start + j] = img.numpy()
    return None


_worker_out: Optional[np.ndarray] = None  # the shared output array, in a decoding process


def _init_worker(buf: mmap.mmap, shape: tuple[int, ...]) -> None:
    global _worker_out
    torch.set_num_threads(1)  # like DataLoader workers: no thread pools in forked children
    _worker_out = np.frombuffer(buf, dtype=np.uint8).reshape(shape)


def _decode_chunk_in_worker(paths: Sequence[str], start: int,
                            size: Optional[int]) -> Optional[tuple[str, int, Any]]:
    assert _worker_out is not None
    return _decode_into(_worker_out, paths, start, size)


def _fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _default_workers() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def _check_pixels(n: int, h: int, w: int, max_pixels: int) -> None:
    total = n * 3 * h * w
    if total > max_pixels:
        raise DataError(
            f"resident data would hold {n} images of 3x{h}x{w} = {total:,} bytes, above "
            f"data.device.max_bytes={int(max_pixels):,}; raise the limit or read the files instead"
        )


def _is_torchvision_like(source: Any) -> bool:
    data = getattr(getattr(source, "ds", source), "data", None)
    return isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4


def _torchvision_arrays(source: Any, size: Optional[int],
                        max_pixels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR's (N, H, W, 3) or STL's (N, 3, H, W) ``.data``: already decoded, used as they are."""
    ds = getattr(source, "ds", source)  # TorchvisionDataset wraps the torchvision object
    data: np.ndarray = ds.data
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if labels is None:
        labels = [-1] * len(data)
    targets = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(targets) != len(data):
        raise DataError(f"{type(ds).__name__}: {len(data)} images but {len(targets)} labels")
    if data.shape[1] == 3:
        chw = data
    elif data.shape[3] == 3:
        chw = data.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{type(ds).__name__}.data has shape {data.shape}, "
                        "not RGB (N,H,W,3) or (N,3,H,W)")
    h, w = (size, size) if size is not None else chw.shape[2:]
    _check_pixels(len(chw), h, w, max_pixels)
    if size is None:
        images = np.ascontiguousarray(chw)
    else:
        images = np.empty((len(chw), 3, size, size), dtype=np.uint8)
        for i in range(0, len(chw), 1024):
            batch = torch.from_numpy(np.ascontiguousarray(chw[i:i + 1024]))
            images[i:i + 1024] = _resize_square(batch, size).numpy()
    classes = [str(c) for c in getattr(ds, "classes", [])]
    return images, targets, classes


def decode_all(source: ImageList | Any, size: Optional[int] = None, *, workers: Optional[int] = None,
               backend: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Every image of ``source`` as one uint8 ``(N, 3, H, W)`` array, and the int64 targets.

    ``source``: an :class:`ImageList` (files are decoded) or a torchvision CIFAR/STL dataset (or this
    package's ``TorchvisionDataset``), whose ``.data`` is already decoded and used directly.

    All images must share one size; otherwise a DataError names the first differing file. With ``size``
    every image is resized (shorter side, bicubic, antialiased) and centre-cropped to ``size`` x
    ``size`` first: the random-crop recipe then starts from that square, not from the original image.

    ``backend``: "processes" (forked workers writing into shared memory), "threads" or "auto". For
    32 px images Python's per-file work (open, read, tensor wrapping) outweighs the decode and holds the
    GIL, so threads do not scale and processes do (CIFAR-10 train, 2 cores: about 3.2 s with 1 worker
    or 2 threads, 2.0 s with 2 processes); for 224 px images both scale alike. "auto" takes processes
    where ``fork`` exists, with more than one worker and at least 4096 images, else threads.
    ``workers`` defaults to the usable cores, at most 8.
    """
    return _decode(source, size, workers, backend, max_pixels, progress)[:2]


def _decode(source: Any, size: Optional[int], workers: Optional[int], backend: str, max_pixels: int,
            progress: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if size is not None and int(size) <= 0:
        raise DataError(f"resident resize size must be positive, got {size}")
    size = int(size) if size is not None else None
    if _is_torchvision_like(source):
        return _torchvision_arrays(source, size, max_pixels)
    if not isinstance(source, ImageList):
        raise DataError(f"cannot hold {type(source).__name__} on the device: need an ImageList or a "
                        "torchvision CIFAR/STL dataset")
    if backend not in ("auto", "processes", "threads"):
        raise DataError(f"decode backend must be 'auto', 'processes' or 'threads', got {backend!r}")
    paths, n = list(source.paths), len(source)
    if n == 0:
        raise DataError("no images to decode")
    targets = np.asarray(source.targets, dtype=np.int64)

    # the first image fixes the size (and shows an unreadable file before anything is allocated)
    try:
        first = decode_image(paths[0])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read image {paths[0]}: {exc}".splitlines()[0]) from None
    if size is not None:
        first = _resize_square(first, size)
    h, w = first.shape[-2:]
    _check_pixels(n, h, w, max_pixels)
    shape = (n, 3, h, w)

    workers = max(1, int(workers or _default_workers()))
    if backend == "auto":
        backend = "processes" if workers > 1 and _fork_available() and n >= 4096 else "threads"
    if backend == "processes" and not _fork_available():
        backend = "threads"
    chunk = max(64, min(1024, math.ceil(n / (workers * 8))))
    starts = list(range(0, n, chunk))

    buf: Optional[mmap.mmap] = None
    if backend == "processes":
        buf = mmap.mmap(-1, max(1, n * 3 * h * w))  # anonymous and shared: forked workers write here
        out = np.frombuffer(buf, dtype=np.uint8, count=n * 3 * h * w).reshape(shape)
    else:
        out = np.empty(shape, dtype=np.uint8)

    problems: list[tuple[str, int, Any]] = []
    bar = tqdm(total=n, unit="img", desc="decoding images", disable=not progress, leave=False)
    try:
        if workers == 1 and backend == "threads":
            for s in starts:
                p = _decode_into(out, paths[s:s + chunk], s, size)
                if p:
                    problems.append(p)
                    break
                bar.update(min(chunk, n - s))
        else:
            ex: Executor
            if backend == "processes":
                ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                         initializer=_init_worker, initargs=(buf, shape))
            else:
                ex = ThreadPoolExecutor(workers, thread_name_prefix="decode")
            try:
                if backend == "processes":
                    futures: dict[Future, int] = {
                        ex.submit(_decode_chunk_in_worker, paths[s:s + chunk], s, size): s
                        for s in starts}
                else:
                    futures = {ex.submit(_decode_into, out, paths[s:s + chunk], s, size): s
                               for s in starts}
                for fut in as_completed(futures):
                    try:
                        p = fut.result()
                    except BrokenProcessPool:
                        raise DataError("a decoding process died (out of memory or a crashing "
                                        "decoder); try backend='threads' or fewer workers") from None
                    if p:
                        problems.append(p)
                        break
                    bar.update(min(chunk, n - futures[fut]))
            finally:
                # chunks run in submission order: every chunk before a failing one still completes,
                # so the smallest reported index is the first bad file
                ex.shutdown(wait=True, cancel_futures=True)
                problems += [p for f in futures if f.done() and not f.cancelled()
                             and f.exception() is None and (p := f.result()) and p not in problems]
    finally:
        bar.close()
    if problems:
        kind, i, detail = min(problems, key=lambda p: p[1])
        if kind == "corrupt":
            raise DataError(f"cannot read image {paths[i]}: {detail}")
        raise DataError(
            f"image {paths[i]} is {detail[1]}x{detail[0]} px, expected {w}x{h} like {paths[0]}: "
            "resident data needs one image size (set data.device.size to resize every image)"
        )
    return out, targets, list(source.classes)


# -------------------------------------------------------------------------------------- disk cache
@dataclass
class ResidentArrays:
    """Decoded images ``(N, 3, H, W)`` uint8 and targets ``(N,)`` int64, and where they came from."""

    images: np.ndarray
    targets: np.ndarray
    classes: list[str] = field(default_factory=list)
    cache_file: Optional[Path] = None  # the .npy, None when not cached (torchvision data)
    from_cache: bool = False


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/solo-mixmask/resident``, else ``~/.cache/solo-mixmask/resident``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "solo-mixmask" / "resident"


def _common_root(paths: Sequence[str]) -> str:
    """The deepest folder that holds every file (from the distinct parent folders: fast)."""
    return os.path.commonpath(sorted({os.path.dirname(os.path.abspath(p)) for p in paths}))


def cache_keys(images: ImageList, size: Optional[int]) -> tuple[str, str]:
    """``(identity, content)`` hashes of a file list, computed from ``stat`` alone.

    identity: relative paths, labels, class names and the resize setting (what the dataset *is*);
    content: identity plus every file's size and ``mtime_ns`` (whether it changed). Paths are taken
    relative to the files' common folder, so a moved copy that keeps its mtimes reuses the cache. A file
    rewritten with the same size and the same mtime is not noticed: delete the cache to force a rebuild.
    """
    root = _common_root(images.paths)
    cut = len(root.rstrip(os.sep)) + 1  # paths below root: slicing is 30x cheaper than relpath
    ident = hashlib.blake2b(digest_size=8)
    content = hashlib.blake2b(digest_size=8)
    ident.update(json.dumps([CACHE_VERSION, size, list(images.classes)]).encode())
    for path, label in zip(images.paths, images.targets):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror}") from None
        path = os.path.abspath(path)
        ident.update(f"{path[cut:]}\0{int(label)}\n".encode())
        content.update(f"{st.st_size} {st.st_mtime_ns}\n".encode())
    identity = ident.hexdigest()
    content.update(identity.encode())
    return identity, content.hexdigest()


def _crc(a: np.ndarray) -> int:
    crc = 0
    flat = a.reshape(-1)
    step = 1 << 26
    for i in range(0, flat.size, step):
        crc = zlib.crc32(np.ascontiguousarray(flat[i:i + step]).data, crc)
    return crc


def _load_cache(npy: Path, meta_file: Path, n: int, targets: np.ndarray,
                max_pixels: int) -> Optional[tuple[np.ndarray, list[str]]]:
    """The cached arrays, or None (with a one-line warning when something was there but unusable)."""
    if not npy.is_file() and not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        shape = tuple(int(s) for s in meta["shape"])
        if meta.get("version") != CACHE_VERSION or len(shape) != 4 or shape[0] != n or shape[1] != 3:
            raise ValueError(f"shape {shape} or version does not match the dataset")
        if not np.array_equal(np.asarray(meta["targets"], dtype=np.int64), targets):
            raise ValueError("labels differ from the dataset's")
        _check_pixels(shape[0], shape[2], shape[3], max_pixels)
        mm = np.load(npy, mmap_mode="r", allow_pickle=False)
        if mm.dtype != np.uint8 or tuple(mm.shape) != shape:
            raise ValueError(f"array is {mm.dtype} {mm.shape}, expected uint8 {shape}")
        images = np.empty(shape, dtype=np.uint8)
        images[...] = mm
        del mm
        if _crc(images) != int(meta["crc32"]):
            raise ValueError("checksum mismatch")
        return images, [str(c) for c in meta.get("classes", [])]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything wrong with a cache means: rebuild it
        warnings.warn(f"ignoring resident cache {npy.name} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); decoding again", stacklevel=3)
        return None


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_cache(cache_dir: Path, identity: str, key: str, images: np.ndarray, targets: np.ndarray,
                 classes: list[str], root: str, size: Optional[int]) -> Optional[Path]:
    npy, meta_file = cache_dir / f"{identity}-{key}.npy", cache_dir / f"{identity}-{key}.json"
    meta = {"version": CACHE_VERSION, "identity": identity, "key": key, "shape": list(images.shape),
            "dtype": "uint8", "layout": "NCHW", "crc32": _crc(images), "resize": size, "root": root,
            "classes": classes, "targets": targets.tolist()}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # the array first, the JSON (which holds its checksum) last: a kill in between leaves a
        # pair that fails the checksum and is rebuilt
        _write_atomic(npy, lambda f: np.save(f, images, allow_pickle=False))
        _write_atomic(meta_file, lambda f: f.write(json.dumps(meta).encode()))
    except OSError as exc:
        warnings.warn(f"cannot write resident cache in {cache_dir} ({exc.strerror}); "
                      "the images will be decoded again next run", stacklevel=3)
        return None
    for old in cache_dir.glob(f"{identity}-*"):  # earlier versions of the same files
        if old.name not in (npy.name, meta_file.name) and not old.name.startswith("."):
            with contextlib.suppress(OSError):
                old.unlink()
    return npy


def load_or_decode(source: ImageList | Any, cache_dir: str | os.PathLike | None = None,
                   size: Optional[int] = None, *, workers: Optional[int] = None,
                   backend: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                   progress: bool = True) -> ResidentArrays:
    """:func:`decode_all` with an on-disk cache for file lists (see :func:`cache_keys` for the key).

    The cache is ``<cache_dir>/<identity>-<content>.npy`` plus a JSON (shape, labels, classes, CRC-32 of
    the pixels), each written to a temporary file and renamed, so a killed run never leaves a torn
    entry. A corrupt or mismatching entry is ignored with a one-line warning and rebuilt; a rebuilt entry
    replaces the older ones of the same dataset. torchvision CIFAR/STL objects are already decoded and
    are not cached. ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    if not isinstance(source, ImageList):
        images, targets, classes = _decode(source, size, workers, backend, max_pixels, progress)
        return ResidentArrays(images, targets, classes)
    if len(source) == 0:
        raise DataError("no images to decode")
    size = int(size) if size is not None else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    identity, key = cache_keys(source, size)
    npy, meta_file = cache / f"{identity}-{key}.npy", cache / f"{identity}-{key}.json"
    targets = np.asarray(source.targets, dtype=np.int64)
    hit = _load_cache(npy, meta_file, len(source), targets, max_pixels)
    if hit is not None:
        return ResidentArrays(hit[0], targets, hit[1] or list(source.classes), npy, True)
    images, targets, classes = _decode(source, size, workers, backend, max_pixels, progress)
    root = _common_root(source.paths)
    written = _write_cache(cache, identity, key, images, targets, classes, root, size)
    return ResidentArrays(images, targets, classes, written, False)


# ----------------------------------------------------------------------------------------- loaders
def _as_uint8_images(images: ArrayLike) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 4 or t.shape[1] != 3:
        got = f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}"
        raise DataError(f"resident images must be uint8 (N, 3, H, W), got {got}")
    return t


def _as_targets(targets: ArrayLike | Sequence[int], n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets)
    t = t.to(torch.int64).reshape(-1)
    if len(t) != n:
        raise DataError(f"resident data has {n} images but {len(t)} targets")
    return t


class DeviceImages:
    """One uint8 ``(N, 3, H, W)`` image tensor and its targets, moved to the device once.

    The training loader and the KNN bank share one instance, so the device holds the images once.
    ``device=None``: the current CUDA device (else the CPU), resolved at the first use, after
    Lightning has chosen each process's GPU.
    """

    def __init__(self, images: ArrayLike, targets: ArrayLike | Sequence[int],
                 device: torch.device | str | None = None) -> None:
        self._host: Optional[torch.Tensor] = _as_uint8_images(images)
        self.num_images = len(self._host)
        if self.num_images == 0:
            raise DataError("resident data holds no images")
        self._host_targets: Optional[torch.Tensor] = _as_targets(targets, self.num_images)
        self._device_arg = device
        self._on_device: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._host.shape if self._host is not None else self._on_device[0].shape)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and targets on the device (copied there at the first call)."""
        if self._on_device is None:
            dev = self._device_arg
            if dev is None:
                dev = (torch.device("cuda", torch.cuda.current_device())
                       if torch.cuda.is_available() else torch.device("cpu"))
            assert self._host is not None and self._host_targets is not None
            self._on_device = (self._host.to(dev).contiguous(), self._host_targets.to(dev))
            self._host = self._host_targets = None
        return self._on_device


class ResidentLoader:
    """Training batches ``[indexes, crops, targets]`` gathered from images held on the device.

    Not a DataLoader: no workers, no collation. Each step indexes the resident tensor and runs
    ``transform(x_uint8 (B, 3, H, W), generator) -> list of crops`` there. The order comes from an
    :class:`~solo_mixmask.data.sampling.EpochSampler` (``self.sampler``): DistributedSampler's
    permutation and sharding, the epoch set by Lightning's ``sampler.set_epoch``, the position saved
    in checkpoints and skipped on resume. Batch ``b`` of epoch ``e`` on rank ``r`` draws its crops from
    a device generator seeded by ``(seed, e, r, b)``, so a run resumed at any batch boundary repeats
    the uninterrupted run exactly. ``rows`` are the image rows trained on (a ``data.fraction`` subset;
    default all), reported as the dataset indexes of the batch. The tail of an epoch is dropped.
    ``ahead``: each batch is made one batch early, on a side stream on a CUDA device (``made_ahead``),
    inline elsewhere; the batches are the same.
    """

    def __init__(self, images: DeviceImages, batch_size: int, transform: Transform,
                 seed: int = 0, rows: Optional[Sequence[int]] = None, rank: Optional[int] = None,
                 world_size: Optional[int] = None, ahead: bool = False) -> None:
        if int(batch_size) <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        self.images = images
        self.batch_size = int(batch_size)
        self.transform = transform
        self.seed = int(seed)
        self.ahead = bool(ahead)
        rows = list(range(images.num_images)) if rows is None else [int(r) for r in rows]
        self.sampler = EpochSampler(rows, self.batch_size, seed=self.seed, rank=rank,
                                    world_size=world_size)
        self._rows: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        self.sampler._shard()
        return self.sampler.num_samples // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[list[Any]]:
        if len(self) == 0:
            raise DataError(f"resident loader: {len(self.sampler.indices)} images over "
                            f"{self.sampler.num_replicas} rank(s) are fewer than one batch "
                            f"(batch_size={self.batch_size})")
        return self._batches()

    def _batches(self) -> Iterator[list[Any]]:
        # a generator: nothing runs until the first batch is asked for, so the epoch is read then,
        # after Lightning's set_epoch (Lightning builds the first iterator before it sets the epoch)
        images, targets = self.images.get()
        device = images.device
        if self._rows is None or self._rows.device != device:
            self._rows = torch.as_tensor(self.sampler.indices, device=device)
        epoch, positions, first = self.sampler.take_epoch()
        order = self._rows[torch.as_tensor(positions, device=device)]
        rank = self.sampler.rank

        def batch(b: int) -> list[Any]:
            rows = order[b * self.batch_size:(b + 1) * self.batch_size]
            gen = torch.Generator(device=device)
            gen.manual_seed(mix_seed(self.seed, epoch, rank, first + b))
            crops = list(self.transform(images.index_select(0, rows), gen))
            return [rows, crops, targets.index_select(0, rows)]

        count = len(order) // self.batch_size
        if not self.ahead:
            yield from map(batch, range(count))
            return
        yield from made_ahead(batch, count,
                              torch.cuda.Stream(device) if device.type == "cuda" else None)


class ResidentEvalLoader:
    """Unaugmented ``(x_float, targets)`` batches in dataset order, for validation or a KNN bank.

    With ``crop_size`` each batch goes through the file path's validation transform
    (:func:`~solo_mixmask.data.augmentations.build_eval_transform`: resize, centre crop,
    normalisation), so both formats evaluate the same pixels; without, only the normalisation.
    Every rank evaluates the whole set (nothing is sharded).
    """

    def __init__(self, images: DeviceImages, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], crop_size: Optional[int] = None) -> None:
        if int(batch_size) <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if len(mean) != 3 or len(std) != 3 or not all(float(s) > 0 for s in std):
            raise DataError(f"mean and std need 3 values, std positive; got {list(mean)}, {list(std)}")
        self.images = images
        self.batch_size = int(batch_size)
        self.transform: Callable[[torch.Tensor], torch.Tensor] = (
            to_normalised(mean, std) if crop_size is None
            else build_eval_transform(int(crop_size), mean, std))

    def __len__(self) -> int:
        return math.ceil(self.images.num_images / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, targets = self.images.get()
        for s in range(0, len(images), self.batch_size):
            yield (self.transform(images[s:s + self.batch_size]),
                   targets[s:s + self.batch_size])


# ----------------------------------------------------------------------------- from a config
def _arrays(spec: LoaderSpec, path: str, train: bool, no_labels: bool = False) -> ResidentArrays:
    dev = spec.data.device
    return load_or_decode(image_source(spec.data, path, train, no_labels), dev.cache_dir, dev.size,
                          workers=dev.decode_workers, max_pixels=int(dev.max_bytes),
                          progress=spec.progress)


def build_device_loaders(spec: LoaderSpec) -> tuple[ResidentLoader, Optional[ResidentEvalLoader],
                                                    Optional[ResidentEvalLoader]]:
    """``data.format: device``: the training loader, the validation loader (None without labelled
    validation data) and the clean KNN bank (None unless ``knn_eval.bank: clean``), all reading
    images held on the training device; the bank shares the training images' tensor."""
    recipe, batch = spec.recipe, spec.batch_size
    device = None if spec.gpu else torch.device("cpu")
    train = _arrays(spec, str(spec.data.train_path), True, bool(spec.data.no_labels))
    images = DeviceImages(train.images, train.targets, device)
    rows = training_rows(train.targets, spec.data, spec.seed, batch)
    if spec.compile_augmentations and not spec.gpu:
        print("notice: performance.compile_augmentations=true is ignored on the CPU (its form of "
              "the recipe runs eagerly; the compiled form is for GPUs)", file=sys.stderr)
    if spec.augment_ahead and not spec.gpu:
        print("notice: performance.augment_ahead=true has no side stream on the CPU: each batch is "
              "made one batch early in line, the same batches", file=sys.stderr)
    loader = ResidentLoader(images, batch, BatchedMultiCrop(
        recipe, "inductor" if spec.compile_augmentations else None), seed=spec.seed, rows=rows,
        ahead=spec.augment_ahead)
    val = bank = None
    if spec.held_out:
        held = _arrays(spec, str(spec.data.val_path), False)
        val = ResidentEvalLoader(DeviceImages(held.images, held.targets, device), batch,
                                 recipe.mean, recipe.std, spec.eval_crop)
        if spec.clean_bank:
            bank = ResidentEvalLoader(images, batch, recipe.mean, recipe.std, spec.eval_crop)
    return loader, val, bank
