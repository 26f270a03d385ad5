"""The DALI pretraining loader against the torchvision path, on real JPEGs, on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision.transforms.v2 import functional as F

from conftest import tiny_cfg
from solo_mixmask.config.pretrain import parse_pretrain_cfg
from solo_mixmask.data.datasets import decode_image, scan_image_folder
from solo_mixmask.data.loaders import build_pretrain_dataset, build_pretrain_loader, dataset_stats
from solo_mixmask.errors import ConfigError

try:
    from solo_mixmask.data.dali import dali_available

    HAVE_DALI = dali_available()
except ImportError:  # pragma: no cover - the module itself is missing
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="NVIDIA DALI is not installed "
                                "(pip install 'solo-mixmask[dali]')")

AUG_224 = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                     "hue": 0.1},
    "grayscale": {"prob": 0.2},
    "gaussian_blur": {"prob": 1.0},
    "solarization": {"prob": 0.2},
    "horizontal_flip": {"prob": 0.5},
    "crop_size": 224,
    "num_crops": 2,
}


def _cfg(train: Path, tmp: Path, **overrides):
    return parse_pretrain_cfg(tiny_cfg("simclr", train, tmp, **overrides))


def _epoch(loader) -> tuple[np.ndarray, list[torch.Tensor], np.ndarray]:
    idx, crops, targets = [], [], []
    for i, c, y in loader:
        idx.append(i.numpy())
        crops.append(torch.stack(c))  # (crops, batch, 3, H, W)
        targets.append(y.numpy())
    return np.concatenate(idx), crops, np.concatenate(targets)


def _channel_stats(batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([b.flatten(0, 1) for b in batches])  # (n, 3, H, W)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


# ----------------------------------------------------------------------------------- error paths
def test_missing_dali_gives_one_line_error(cifar_train, tmp_path, monkeypatch):
    from solo_mixmask.engine.pretrain import prepare

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    cfg = tiny_cfg("simclr", cifar_train, tmp_path, data__format="dali")
    with pytest.raises(ConfigError) as err:
        prepare(cfg)
    message = str(err.value)
    assert message == "data.format=dali needs NVIDIA DALI: pip install 'solo-mixmask[dali]'"
    assert not (tmp_path / "trained_models").exists()


@needs_dali
def test_gpu_decoding_without_a_gpu_is_a_config_error(cifar_train, tmp_path):
    from solo_mixmask.data.dali import build_dali_pretrain_loader

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = _cfg(cifar_train, tmp_path, data__format="dali", dali__device="gpu")
    with pytest.raises(ConfigError, match="dali.device=gpu needs a CUDA GPU"):
        build_dali_pretrain_loader(cfg, gpu=False)


# ------------------------------------------------------------------------------ DALI vs torchvision
@needs_dali
@pytest.mark.parametrize("which", ["cifar", "imagenette"])
def test_dali_batches_match_the_torchvision_path(which, cifar_train, imagenette_train, tmp_path):
    from solo_mixmask.data.dali import build_dali_pretrain_loader

    if which == "cifar":
        train, size, batch, overrides = cifar_train, 32, 50, {}
    else:
        train, size, batch = imagenette_train, 224, 20
        overrides = {"augmentations": [AUG_224], "data__dataset": "custom"}
    cfg = _cfg(train, tmp_path, optimizer__batch_size=batch, data__format="dali",
               dali__threads=2, **overrides)
    images = scan_image_folder(train)
    n = len(images)

    dali_loader = build_dali_pretrain_loader(cfg, gpu=False)
    assert len(dali_loader) == n // batch
    idx, dali_crops, targets = _epoch(dali_loader)
    assert len(idx) == len(dali_loader) * batch == n
    assert sorted(idx.tolist()) == list(range(n))  # real dataset indexes, each once
    assert (targets == np.asarray(images.targets)[idx]).all()
    first = dali_crops[0]
    assert first.shape == (2, batch, 3, size, size) and first.dtype == torch.float32

    tv_cfg = OmegaConf.merge(cfg, {"data": {"format": "image_folder", "num_workers": 0}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-image ops: a second thread only adds contention
    try:
        tv_crops = [torch.stack(c) for _, c, _ in build_pretrain_loader(
            tv_cfg, build_pretrain_dataset(tv_cfg), gpu=False)]
    finally:
        torch.set_num_threads(threads)

    m, s = (torch.tensor(v).view(3) for v in dataset_stats(cfg))
    lo, hi = (0 - m) / s, (1 - m) / s
    for crops in (dali_crops, tv_crops):
        x = torch.cat(crops)
        assert torch.isfinite(x).all()
        assert (x.amin(dim=(0, 1, 3, 4)) >= lo - 1e-3).all()
        assert (x.amax(dim=(0, 1, 3, 4)) <= hi + 1e-3).all()
    d_mean, d_std = _channel_stats(dali_crops)
    t_mean, t_std = _channel_stats(tv_crops)
    assert torch.allclose(d_mean, t_mean, atol=0.1), (d_mean, t_mean)
    assert torch.allclose(d_std, t_std, rtol=0.1), (d_std, t_std)
    # the recipe is random: the two crops of an image differ
    assert not torch.equal(first[0], first[1])


@needs_dali
def test_dali_hue_shift_is_torchvision_hsv_shift(imagenette_train):
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    from solo_mixmask.data.dali import _hsv_hue_shift

    imgs = [decode_image(p) for p in scan_image_folder(imagenette_train).paths[::20]]
    hwc = [x.permute(1, 2, 0).contiguous().numpy() for x in imgs]
    for shift in (-0.3, 0.04):
        @pipeline_def(batch_size=len(hwc), num_threads=1, device_id=None)
        def pipe(shift=shift):
            x = fn.cast(fn.external_source(source=lambda: hwc, layout="HWC", batch=True),
                        dtype=types.FLOAT)
            return _hsv_hue_shift(x, fn.constant(fdata=shift), dmath)

        p = pipe()
        p.build()
        (out,) = p.run()
        for o, x in zip(out, imgs):
            got = torch.from_numpy(np.array(o)).permute(2, 0, 1)
            assert (got - F.adjust_hue(x, shift).float()).abs().max() <= 1.0


# ------------------------------------------------------------------------------------- sharding
@needs_dali
@pytest.mark.parametrize("n_images,batch,steps", [(500, 50, 5), (499, 50, 4)])
def test_two_ranks_share_each_epoch(n_images, batch, steps, cifar_train):
    """Over 2 ranks, every image once per epoch (when the batches tile the shards) and always the
    same number of batches on both ranks (499 images: shards of 249 and 250 give 4 batches each)."""
    from solo_mixmask.data.dali import CropRecipe, DALIPretrainLoader

    images = scan_image_folder(cifar_train)
    aug = OmegaConf.create({"crop_size": 16, "num_crops": 1, "horizontal_flip": {"prob": 0.5}})
    recipe = [CropRecipe.from_cfg(aug)]
    loaders = [DALIPretrainLoader(images, range(n_images), recipe, (0.5,) * 3, (0.25,) * 3,
                                  batch, num_threads=1, seed=3, shard=(rank, 2))
               for rank in (0, 1)]
    epochs = [[], []]
    for rank, loader in enumerate(loaders):
        assert len(loader) == steps
        for _ in range(2):
            seen = [i for i, crops, _ in loader for i in i.tolist()]
            assert len(seen) == steps * batch and len(set(seen)) == len(seen)
            epochs[rank].append(seen)
    for epoch in range(2):
        both = epochs[0][epoch] + epochs[1][epoch]
        assert len(set(both)) == len(both)  # the ranks never share an image
        if n_images == steps * batch * 2:
            assert sorted(both) == list(range(n_images))
    assert epochs[0][0] != epochs[0][1]  # reshuffled between epochs


@needs_dali
def test_abandoned_epoch_restarts_cleanly(cifar_train):
    from solo_mixmask.data.dali import CropRecipe, DALIPretrainLoader

    images = scan_image_folder(cifar_train)
    aug = OmegaConf.create({"crop_size": 16, "num_crops": 2})
    loader = DALIPretrainLoader(images, range(len(images)), [CropRecipe.from_cfg(aug)],
                                (0.5,) * 3, (0.25,) * 3, 100, num_threads=1, shard=(0, 1))
    for step, _ in enumerate(loader):
        if step == 1:
            break  # as with limit_train_batches
    full = [i for i, _, _ in loader]
    assert len(full) == len(loader) == 5
    assert sorted(torch.cat(full).tolist()) == list(range(len(images)))


# ----------------------------------------------------------------------------------- training
@needs_dali
def test_pretraining_with_dali_takes_steps_and_checkpoints(cifar_train, tmp_path):
    from solo_mixmask.data.dali import DALIPretrainLoader
    from solo_mixmask.engine.pretrain import prepare, pretrain

    cfg = tiny_cfg("mixmask_mocov2plus", cifar_train, tmp_path, data__format="dali",
                   dali__threads=2, limit_train_batches=4)
    _, loader, _, _, _ = prepare(cfg.copy())
    assert isinstance(loader, DALIPretrainLoader)
    result = pretrain(cfg)
    assert result.checkpoint is not None and result.checkpoint.is_file()
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    assert np.isfinite(result.metrics["train_loss"])


@needs_dali
def test_held_batches_are_not_overwritten(cifar_train):
    """Lightning holds a batch while it fetches the next: DALI must not reuse its memory."""
    from solo_mixmask.data.dali import CropRecipe, DALIPretrainLoader

    images = scan_image_folder(cifar_train)
    aug = OmegaConf.create({"crop_size": 16, "num_crops": 2, "horizontal_flip": {"prob": 0.5}})
    loader = DALIPretrainLoader(images, range(len(images)), [CropRecipe.from_cfg(aug)],
                                (0.5,) * 3, (0.25,) * 3, 100, num_threads=1, shard=(0, 1))
    held, copies = [], []
    for idx, crops, _ in loader:
        held.append((idx, crops[0]))
        copies.append((idx.clone(), crops[0].clone()))
    assert len(held) == 5
    for (i, x), (ci, cx) in zip(held, copies):
        assert torch.equal(i, ci) and torch.equal(x, cx)
