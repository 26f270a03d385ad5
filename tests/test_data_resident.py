"""Device-resident data on real CIFAR-10 / Imagenette images: decoding, the disk cache, and the
loader's sharding, epochs and determinism (compared with torch's DistributedSampler and Lightning)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from solo_mixmask.config.datasets import DATASETS
from solo_mixmask.data.augmentations import build_eval_transform
from solo_mixmask.data.datasets import ImageList, TorchvisionDataset, scan_image_folder
from solo_mixmask.data.resident import (
    DeviceImages,
    ResidentEvalLoader,
    ResidentLoader,
    decode_all,
    load_or_decode,
)
from solo_mixmask.errors import DataError

MEAN, STD = DATASETS["cifar10"].mean, DATASETS["cifar10"].std


def tv_decode(path: str) -> torch.Tensor:
    return decode_image(read_file(path), mode=ImageReadMode.RGB)


class FlipNormalise:
    """A stand-in for BatchedMultiCrop: per-sample random flip from the generator, then normalise."""

    def __init__(self, num_crops: int = 2) -> None:
        self.num_crops = num_crops
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        crops = []
        for _ in range(self.num_crops):
            flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
            y = x.float() / 255
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            crops.append((y - self.mean.to(x.device)) / self.std.to(x.device))
        return crops


@pytest.fixture(scope="module")
def cifar_list(cifar_train) -> ImageList:
    return scan_image_folder(cifar_train)


@pytest.fixture(scope="module")
def cifar_arrays(cifar_list) -> tuple[np.ndarray, np.ndarray]:
    return decode_all(cifar_list, progress=False)


def copy_tree(images: ImageList, dest: Path, keep: list[int]) -> ImageList:
    for i in keep:
        src = Path(images.paths[i])
        (dest / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / src.parent.name / src.name)
    return scan_image_folder(dest)


def no_crops(x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
    """For tests of the order alone: no augmentation work."""
    return []


def batches(loader) -> list[list]:
    return [[i.clone(), [c.clone() for c in crops], y.clone()] for i, crops, y in loader]


def same_batches(a: list[list], b: list[list]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[2], y[2])
        and all(torch.equal(c, d) for c, d in zip(x[1], y[1])) for x, y in zip(a, b))


# -------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("backend,workers", [("threads", 1), ("threads", 2), ("processes", 2)])
def test_decode_equals_torchvision(cifar_list, backend, workers):
    images, targets = decode_all(cifar_list, workers=workers, backend=backend, progress=False)
    expected = torch.stack([tv_decode(p) for p in cifar_list.paths]).numpy()
    assert images.dtype == np.uint8 and images.shape == (500, 3, 32, 32)
    assert np.array_equal(images, expected)
    assert targets.dtype == np.int64 and targets.tolist() == cifar_list.targets


def test_torchvision_objects_use_their_decoded_arrays(cifar_arrays):
    """CIFAR keeps (N, H, W, 3), STL (N, 3, H, W): both come back as (N, 3, H, W) unchanged."""
    from torchvision.datasets import CIFAR10, STL10

    images, targets = cifar_arrays
    cifar = CIFAR10.__new__(CIFAR10)  # the real class, filled with real images (no pickles here)
    cifar.data, cifar.targets = images.transpose(0, 2, 3, 1).copy(), targets.tolist()
    cifar.classes = [f"c{i}" for i in range(10)]
    got, y = decode_all(cifar, progress=False)
    assert np.array_equal(got, images) and np.array_equal(y, targets)
    wrapped = TorchvisionDataset.__new__(TorchvisionDataset)
    wrapped.ds = cifar
    assert np.array_equal(load_or_decode(wrapped).images, images)  # no cache for these

    stl = STL10.__new__(STL10)
    stl.data, stl.labels = images.copy(), np.full(len(images), -1)
    got, y = decode_all(stl, size=24, progress=False)
    assert got.shape == (500, 3, 24, 24) and (y == -1).all()


def test_mixed_sizes_name_the_first_odd_file(cifar_list, imagenette_train, tmp_path):
    tree = copy_tree(cifar_list, tmp_path / "mixed", list(range(0, 500, 2)))  # 250 images
    big = sorted(p for p in Path(imagenette_train).rglob("*") if p.is_file() and p.suffix)
    # two 224 px images sorted into the middle of the list, in different chunks
    targets = [tree.paths[90], tree.paths[200]]
    for t, b in zip(targets, big[:2]):
        shutil.copyfile(b, t)
    for backend in ("threads", "processes"):
        with pytest.raises(DataError) as err:
            decode_all(tree, workers=2, backend=backend, progress=False)
        msg = str(err.value)
        assert targets[0] in msg and "expected 32x32" in msg and targets[1] not in msg
        assert "\n" not in msg


def test_resize_to_a_common_size(cifar_list, imagenette_train, tmp_path):
    tree = copy_tree(cifar_list, tmp_path / "mixed", list(range(0, 500, 25)))  # 20 images
    big = sorted(p for p in Path(imagenette_train).rglob("*") if p.is_file() and p.suffix)[0]
    shutil.copyfile(big, tree.paths[5])
    images, _ = decode_all(tree, size=32, progress=False)
    assert images.shape == (20, 3, 32, 32)
    reference = v2.Compose([v2.Resize(32, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                            v2.CenterCrop(32)])
    for i, p in enumerate(tree.paths):
        assert np.array_equal(images[i], reference(tv_decode(p)).numpy()), p


def test_max_pixels_refusal(cifar_list):
    with pytest.raises(DataError, match=r"data\.device\.max_bytes=1,000,000") as err:
        decode_all(cifar_list, max_pixels=1_000_000, progress=False)
    assert "1,536,000" in str(err.value)  # 500 x 3 x 32 x 32


def test_corrupt_image_is_named(cifar_list, tmp_path):
    tree = copy_tree(cifar_list, tmp_path / "t", list(range(0, 500, 10)))
    Path(tree.paths[7]).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match="cannot read image") as err:
        decode_all(tree, progress=False)
    assert tree.paths[7] in str(err.value)


# ------------------------------------------------------------------------------ disk cache
def test_cache_written_reused_and_rebuilt(cifar_list, tmp_path):
    tree = copy_tree(cifar_list, tmp_path / "t", list(range(0, 500, 8)))  # 63 images
    cache = tmp_path / "cache"
    first = load_or_decode(tree, cache, progress=False)
    assert not first.from_cache and first.cache_file is not None and first.cache_file.is_file()
    meta = json.loads(first.cache_file.with_suffix(".json").read_text())
    assert meta["shape"] == [63, 3, 32, 32] and meta["targets"] == tree.targets
    assert meta["classes"] == tree.classes
    mtime = first.cache_file.stat().st_mtime_ns

    second = load_or_decode(tree, cache, progress=False)
    assert second.from_cache and second.cache_file == first.cache_file
    assert first.cache_file.stat().st_mtime_ns == mtime
    assert np.array_equal(second.images, first.images)
    assert np.array_equal(second.targets, first.targets) and second.classes == first.classes

    # rewrite one file with another image's bytes and a new mtime
    changed = tree.paths[3]
    shutil.copyfile(tree.paths[40], changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = load_or_decode(tree, cache, progress=False)
    assert not third.from_cache and third.cache_file != first.cache_file
    assert np.array_equal(third.images[3], tv_decode(changed).numpy())
    assert not np.array_equal(third.images[3], first.images[3])
    assert not first.cache_file.exists()  # the stale entry of the same files was replaced
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]

    # a different resize setting is a different entry
    resized = load_or_decode(tree, cache, size=24, progress=False)
    assert not resized.from_cache and resized.images.shape == (63, 3, 24, 24)
    assert load_or_decode(tree, cache, progress=False).from_cache


def _corrupt_truncate(npy: Path) -> None:
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])


def _corrupt_flip(npy: Path) -> None:
    data = bytearray(npy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npy.write_bytes(bytes(data))


def _corrupt_json(npy: Path) -> None:
    npy.with_suffix(".json").write_text('{"version": 1, "shape": [')


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_flip, _corrupt_json])
def test_corrupt_cache_is_ignored_and_rebuilt(cifar_list, tmp_path, corrupt):
    tree = copy_tree(cifar_list, tmp_path / "t", list(range(0, 500, 10)))
    cache = tmp_path / "cache"
    good = load_or_decode(tree, cache, progress=False)
    corrupt(good.cache_file)
    with pytest.warns(UserWarning, match="ignoring resident cache") as rec:
        again = load_or_decode(tree, cache, progress=False)
    ours = [w for w in rec if "resident cache" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message)
    assert not again.from_cache and np.array_equal(again.images, good.images)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert load_or_decode(tree, cache, progress=False).from_cache  # rebuilt entry is good
    assert not [w for w in rec if "resident cache" in str(w.message)]


def test_cache_respects_max_pixels(cifar_list, tmp_path):
    tree = copy_tree(cifar_list, tmp_path / "t", list(range(0, 500, 10)))
    load_or_decode(tree, tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match="data.device.max_bytes"):
        load_or_decode(tree, tmp_path / "cache", max_pixels=1000, progress=False)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    from solo_mixmask.data.resident import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "solo-mixmask" / "resident"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "solo-mixmask" / "resident"


# ------------------------------------------------------------------------- training loader
def sampler_indices(n: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                           drop_last=False)
    s.set_epoch(epoch)
    return list(s)


def loader_of(arrays, batch, transform, n=None, **kw) -> ResidentLoader:
    images, targets = arrays
    n = n or len(images)
    return ResidentLoader(DeviceImages(images[:n], targets[:n], "cpu"), batch, transform, **kw)


def epoch(loader: ResidentLoader, e: int) -> list[list]:
    loader.set_epoch(e)
    return batches(loader)


@pytest.mark.parametrize("world", [2, 3])
def test_sharding_equals_distributed_sampler(cifar_arrays, world):
    """497 images: not divisible by 2 or 3, so DistributedSampler pads with its permutation's start."""
    for rank in range(world):
        loader = loader_of(cifar_arrays, 16, no_crops, 497, seed=11, rank=rank, world_size=world)
        for e in range(4):
            expected = sampler_indices(497, 11, e, rank, world)
            assert [loader.sampler.indices[p] for p in loader.sampler.order(e)] == expected
            seen = torch.cat([i for i, _, _ in epoch(loader, e)]).tolist()
            assert seen == expected[:len(loader) * 16], (rank, e)  # the tail batch is dropped


@pytest.mark.parametrize("world", [2, 3])
def test_each_index_once_per_epoch_across_ranks(cifar_arrays, world):
    n = 497
    samplers = [loader_of(cifar_arrays, 32, no_crops, n, seed=3, rank=r, world_size=world).sampler
                for r in range(world)]
    orders = []
    for e in range(3):
        seen = torch.tensor([s.indices[p] for s in samplers for p in s.order(e)])
        counts = torch.bincount(seen, minlength=n)
        padding = -(-n // world) * world - n
        assert (counts >= 1).all() and int((counts == 2).sum()) == padding
        g = torch.Generator()
        g.manual_seed(3 + e)
        assert set(torch.nonzero(counts == 2).flatten().tolist()) == set(
            torch.randperm(n, generator=g)[:padding].tolist())
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])


def test_batch_format_and_content(cifar_arrays):
    images, targets = cifar_arrays
    loader = loader_of(cifar_arrays, 64, FlipNormalise(2), seed=0)
    assert len(loader) == 500 // 64
    all_batches = list(loader)
    assert len(all_batches) == 7
    idx, crops, y = all_batches[0]
    assert idx.dtype == torch.int64 and y.dtype == torch.int64 and idx.shape == (64,)
    assert idx.device == y.device == torch.device("cpu")
    assert isinstance(crops, list) and len(crops) == 2
    assert all(c.dtype == torch.float32 and c.shape == (64, 3, 32, 32) for c in crops)
    assert torch.equal(y, torch.as_tensor(targets)[idx])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    plain = (torch.as_tensor(images)[idx].float() / 255 - mean) / std
    for c in crops:  # each sample is its own image, flipped or not
        same = torch.isclose(c, plain, atol=1e-6).flatten(1).all(1)
        flipped = torch.isclose(c, plain.flip(-1), atol=1e-6).flatten(1).all(1)
        assert (same | flipped).all()
        assert (same & ~flipped).any() and (flipped & ~same).any()


def test_short_data_and_bad_arrays(cifar_arrays):
    images, targets = cifar_arrays
    three = loader_of(cifar_arrays, 64, FlipNormalise(1), rank=2, world_size=3)
    assert len(three) == 2 and [len(i) for i, _, _ in three] == [64, 64]  # 167 per rank
    tiny = loader_of(cifar_arrays, 64, FlipNormalise(1), 40)
    assert len(tiny) == 0
    with pytest.raises(DataError, match="fewer than one batch"):
        iter(tiny)
    with pytest.raises(DataError, match="uint8"):
        DeviceImages(images.astype(np.float32), targets)
    with pytest.raises(DataError, match="targets"):
        DeviceImages(images, targets[:10])


def test_determinism_and_resume_at_any_batch(cifar_arrays):
    """Epoch e's batches depend on (seed, e) only: a fresh loader set to epoch e, or restored to
    (epoch e, batch k), gives exactly the uninterrupted run's batches from there."""
    def make(seed=5):
        return loader_of(cifar_arrays, 50, FlipNormalise(2), seed=seed)

    a, b = make(), make()
    run_a = [epoch(a, e) for e in range(3)]
    assert same_batches(epoch(b, 1), run_a[1]) and same_batches(epoch(b, 0), run_a[0])
    restored = make()
    restored.load_state_dict({"epoch": 2, "batch": 3})
    assert same_batches(batches(restored), run_a[2][3:])
    assert same_batches(batches(restored), run_a[2])  # the skip applies once
    assert not torch.equal(run_a[0][0][0], run_a[1][0][0])  # another order
    first = {int(i): c for batch in run_a[0] for i, c in zip(batch[0], batch[1][0])}
    second = {int(i): c for batch in run_a[1] for i, c in zip(batch[0], batch[1][0])}
    common = sorted(set(first) & set(second))
    assert any(not torch.equal(first[i], second[i]) for i in common)  # other draws
    assert not same_batches(epoch(make(seed=6), 0), run_a[0])


def test_batches_made_ahead_are_the_same_batches(cifar_arrays):
    """``ahead`` (``performance.augment_ahead``) changes when a batch is made, not what it holds:
    every epoch and a restored mid-epoch position give the in-line loader's batches."""
    def make(ahead):
        return loader_of(cifar_arrays, 50, FlipNormalise(2), seed=5, ahead=ahead)

    inline, ahead = make(False), make(True)
    for e in (0, 1):
        assert same_batches(epoch(ahead, e), epoch(inline, e))
    inline.load_state_dict({"epoch": 2, "batch": 3})
    ahead.load_state_dict({"epoch": 2, "batch": 3})
    assert same_batches(batches(ahead), batches(inline))
    calls = []
    counting = loader_of(cifar_arrays, 50, lambda x, g: calls.append(1) or [], seed=5, ahead=True)
    n = len(counting)
    assert [len(calls) for _ in counting] == [min(b + 2, n) for b in range(n)]  # one batch early


def test_the_epoch_is_read_at_the_first_batch(cifar_arrays):
    """An iterator that is never consumed (Lightning's iterability check) changes nothing, and a
    set_epoch between iter() and the first batch applies (Lightning's order of calls)."""
    loader = loader_of(cifar_arrays, 100, FlipNormalise(1), seed=1)
    iter(loader)
    it = iter(loader)
    loader.set_epoch(3)
    first = next(it)
    order = loader.sampler.order(3)
    assert first[0].tolist() == [loader.sampler.indices[p] for p in order[:100]]


def test_rows_are_reported_as_dataset_indexes(cifar_arrays):
    images, targets = cifar_arrays
    keep = list(range(0, 500, 3))
    loader = loader_of(cifar_arrays, 16, FlipNormalise(1), rows=keep)
    seen = torch.cat([idx for idx, _, _ in loader]).tolist()
    assert set(seen) <= set(keep) and len(seen) == len(keep) // 16 * 16


# ----------------------------------------------------------------------------- eval loader
@pytest.mark.parametrize("crop", [None, 32, 24])
def test_eval_loader_matches_build_eval_transform(cifar_arrays, crop):
    images, targets = cifar_arrays
    loader = ResidentEvalLoader(DeviceImages(images, targets, "cpu"), 96, MEAN, STD,
                                crop_size=crop)
    out = list(loader)
    assert len(loader) == len(out) == 6 and len(out[-1][0]) == 500 - 5 * 96
    x = torch.cat([b[0] for b in out])
    y = torch.cat([b[1] for b in out])
    assert torch.equal(y, torch.as_tensor(targets))
    ref_t = build_eval_transform(crop or 32, MEAN, STD)
    ref = torch.stack([ref_t(torch.as_tensor(img)) for img in images])
    assert x.dtype == torch.float32 and x.shape == ref.shape
    assert torch.allclose(x, ref, atol=1e-6)


def test_eval_loader_resizes_like_build_eval_transform_above_64px(imagenette_train):
    images, targets = decode_all(scan_image_folder(imagenette_train), size=224, progress=False)
    loader = ResidentEvalLoader(DeviceImages(images, targets, "cpu"), 40, (0.5, 0.4, 0.3),
                                (0.2, 0.25, 0.3), crop_size=128)
    x = torch.cat([b[0] for b in loader])
    ref_t = build_eval_transform(128, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))  # resize 146, crop 128
    ref = torch.stack([ref_t(torch.as_tensor(img)) for img in images])
    assert x.shape == ref.shape == (100, 3, 128, 128)
    assert torch.allclose(x, ref, atol=1e-5)


def test_eval_loader_at_the_native_size_above_64px_evaluates_what_the_file_path_does(
        imagenette_train):
    """Above 64 px the validation transform resizes to crop/0.875 and centre-crops even when the
    images already have the crop's size: the device format must see the same pixels."""
    images, targets = decode_all(scan_image_folder(imagenette_train), size=96, progress=False)
    loader = ResidentEvalLoader(DeviceImages(images, targets, "cpu"), 40, MEAN, STD, crop_size=96)
    x = torch.cat([b[0] for b in loader])
    ref_t = build_eval_transform(96, MEAN, STD)  # resize 110, crop 96
    ref = torch.stack([ref_t(torch.as_tensor(img)) for img in images])
    plain = (torch.as_tensor(images).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD).view(3, 1, 1)
    assert not torch.allclose(ref, plain, atol=1e-2)  # the transform does change these pixels
    assert torch.equal(x, ref)


def test_the_bank_shares_the_training_images(cifar_arrays):
    images = DeviceImages(*cifar_arrays, "cpu")
    train = ResidentLoader(images, 50, no_crops)
    bank = ResidentEvalLoader(images, 100, MEAN, STD)
    next(iter(train))
    first = next(iter(bank))
    assert images.get()[0].data_ptr() == images.get()[0].data_ptr()  # moved once
    assert torch.equal(first[1], torch.as_tensor(cifar_arrays[1][:100]))


# --------------------------------------------------------------------- through Lightning
class Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[list]] = {}
        self.val_sizes: list[int] = []

    def validation_step(self, batch, batch_idx):
        x, y = batch
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        self.val_sizes.append(len(y))

    def training_step(self, batch, batch_idx):
        idx, crops, targets = batch
        self.seen.setdefault(self.current_epoch, []).append(
            [idx.clone(), [c.clone() for c in crops], targets.clone()])
        return (self.w * crops[0].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(epochs: int, root: Path, loader: ResidentLoader, *extra) -> pl.Trainer:
    from solo_mixmask.engine.interrupt import DataPosition

    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(root),
                      num_sanity_val_steps=0, callbacks=[DataPosition(loader.sampler), *extra])


class Killed(Exception):
    pass


class SaveAt(pl.Callback):
    def __init__(self, path: Path, epoch: int, batch: int) -> None:
        self.path, self.epoch, self.batch = path, epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            trainer.save_checkpoint(self.path)  # the state before this batch
            raise Killed


def test_lightning_epochs_and_resume_inside_an_epoch(cifar_arrays, tmp_path):
    """Lightning runs epochs 0, 1, 2 of the loader (and the eval loader as its validation); a run
    killed before batch 2 of epoch 1 and resumed from that checkpoint sees exactly the rest of the
    uninterrupted run."""
    def make():
        return loader_of(cifar_arrays, 64, FlipNormalise(2), 256, seed=9)

    full, loader = Recorder(), make()
    val = ResidentEvalLoader(DeviceImages(cifar_arrays[0][:200], cifar_arrays[1][:200], "cpu"),
                             128, MEAN, STD)
    _trainer(3, tmp_path, loader).fit(full, loader, val)
    assert full.val_sizes == [128, 72] * 3
    ckpt, loader = tmp_path / "mid.ckpt", make()
    with pytest.raises(Killed):
        _trainer(3, tmp_path, loader, SaveAt(ckpt, 1, 2)).fit(Recorder(), loader)
    assert torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"][
        "combined_loader"] == [{"epoch": 1, "batch": 2}]
    resumed, loader = Recorder(), make()
    _trainer(3, tmp_path, loader).fit(resumed, loader, ckpt_path=str(ckpt))
    assert same_batches(resumed.seen[1], full.seen[1][2:])
    assert same_batches(resumed.seen[2], full.seen[2])


def test_the_device_size_limit_has_one_default():
    """``decode_all``'s limit is the schema's ``data.device.max_bytes`` default, not a copy of it."""
    from omegaconf import OmegaConf

    from solo_mixmask.config.schema import DeviceDataConfig
    from solo_mixmask.data import resident

    assert OmegaConf.structured(DeviceDataConfig).max_bytes == resident.DEFAULT_MAX_PIXELS
    assert "4_000_000_000" not in Path(resident.__file__).read_text()
