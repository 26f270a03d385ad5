"""Shared fixtures: real images from ../shared/data, unpacked once per session.

Where the data is missing, data tests skip with a reason; with ``SOLO_MIXMASK_REQUIRE_DATA=1`` (set
by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from solo_mixmask.data.npz import shared_data_dir, unpack_npz

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other by name
REQUIRE_DATA = os.environ.get("SOLO_MIXMASK_REQUIRE_DATA") == "1"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def data_file(relative: str) -> Path:
    """A file under the shared data directory, or skip (fail in CI) with the reason."""
    root = shared_data_dir()
    path = root / relative if root else None
    if path is None or not path.is_file():
        reason = (f"real image data not found ({relative}); put the shared data at ../shared/data "
                  "or set SOLO_MIXMASK_DATA")
        if REQUIRE_DATA:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _unpack(cache: Path, npz: str, name: str, per_class: int) -> Path:
    return unpack_npz(data_file(npz), cache / name, per_class=per_class)


@pytest.fixture(scope="session")
def device_cache(tmp_path_factory) -> Path:
    """``data.device.cache_dir`` of every test: the decoded images are content-keyed, so each tree
    is decoded once per test run."""
    return tmp_path_factory.mktemp("resident-cache")


@pytest.fixture(scope="session")
def cifar_train(data_cache) -> Path:
    """500 real CIFAR-10 training images (50 per class) as an ImageFolder tree."""
    return _unpack(data_cache, "cifar10-jpeg/train.npz", "cifar10-train", 50)


@pytest.fixture(scope="session")
def cifar_test(data_cache) -> Path:
    """200 real CIFAR-10 test images (20 per class)."""
    return _unpack(data_cache, "cifar10-jpeg/test.npz", "cifar10-test", 20)


@pytest.fixture(scope="session")
def tiny_imagenet_train(data_cache) -> Path:
    """400 real Tiny-ImageNet images at 32 px (2 of each of the 200 classes)."""
    return _unpack(data_cache, "tiny-imagenet-200-32px/train.npz", "tiny-imagenet-train", 2)


@pytest.fixture(scope="session")
def imagenette_train(data_cache) -> Path:
    """100 real Imagenette images at 224 px (10 per class)."""
    return _unpack(data_cache, "imagenette2-224px/train_200pc.npz", "imagenette-train", 10)


AUG_32 = {
    "rrc": {"enabled": True, "crop_min_scale": 0.2, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                     "hue": 0.1},
    "grayscale": {"prob": 0.2},
    "gaussian_blur": {"prob": 0.0},
    "solarization": {"prob": 0.0},
    "horizontal_flip": {"prob": 0.5},
    "crop_size": 32,
    "num_crops": 2,
}

METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "mocov2plus": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 256,
                   "temperature": 0.2},
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32, "temperature": 0.2},
    "simsiam": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 16},
}


def eval_data(dataset: str = "cifar10", path: Path | str = ".", **keys: Any) -> Any:
    """An evaluation config's validated ``data`` section, as the image datasets of the
    evaluations read it."""
    from solo_mixmask.config.eval_schema import EvalDataConfig
    from solo_mixmask.config.validation import validate

    return validate({"dataset": dataset, "train_path": str(path), "val_path": str(path), **keys},
                    EvalDataConfig, "data")


def tiny_cfg(method: str, train_path: Path, tmp: Path, val_path: Path | None = None,
             **overrides: Any):
    """A small but complete pretraining config on real images (resnet18 at 1/8 width)."""
    base = method.removeprefix("mixmask_")
    cfg = OmegaConf.create({
        "name": f"test-{method}",
        "method": method,
        "backbone": {"name": "resnet18", "kwargs": {"width": 0.125}},
        "method_kwargs": dict(METHOD_KWARGS[base]),
        "momentum": {"base_tau": 0.99, "final_tau": 1.0},
        "data": {"dataset": "cifar10", "train_path": str(train_path),
                 "val_path": str(val_path) if val_path else None, "num_workers": 0},
        "augmentations": [dict(AUG_32)],
        "optimizer": {"name": "sgd", "batch_size": 32, "lr": 0.3, "classifier_lr": 0.3,
                      "weight_decay": 1e-4},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0},
        "checkpoint": {"enabled": True, "dir": str(tmp / "trained_models")},
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "precision": 32,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    })
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


# ------------------------------------------------------------- one pretrained checkpoint
KNN_EVAL = {"enabled": True, "bank": "clean", "k": 200, "T": 0.1, "distance_func": "cosine",
            "frequency": 2}
EPOCHS = 10


@pytest.fixture(scope="session")
def pretrained(cifar_train, cifar_test, tmp_path_factory):
    """The evaluation tests' one short pretraining run, shared by the whole test run: SimCLR on
    500 real CIFAR-10 images for 10 epochs, stopped after 6 and resumed from the
    checkpoint (two CSV logging sessions), KNN-monitored every other epoch. The untouched initial
    backbone is saved as bare ResNet weights."""
    tmp = tmp_path_factory.mktemp("pretrain")
    init = tmp / "untrained.pth"

    class SaveInitThenStop(Callback):
        def on_train_start(self, trainer, pl_module):
            torch.save(pl_module.backbone.state_dict(), init)

        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch >= 5

    cfg = {"val_path": cifar_test, "optimizer__lr": 0.5, "knn_eval": KNN_EVAL, "max_epochs": EPOCHS}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine two threads mostly wait on each other
    try:
        first, second = _pretrain_twice(cifar_train, tmp, cfg, SaveInitThenStop())
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(run_dir=second.run_dir, checkpoint=second.checkpoint, untrained=init,
                           results=tmp / "results")


def _pretrain_twice(cifar_train, tmp, cfg, stopper):
    from solo_mixmask.engine.pretrain import pretrain

    first = pretrain(tiny_cfg("simclr", cifar_train, tmp, **cfg), callbacks=[stopper])
    assert first.checkpoint.name.endswith("-ep=5.ckpt")
    second = pretrain(tiny_cfg("simclr", cifar_train, tmp,
                               resume_from_checkpoint=str(first.checkpoint), **cfg))
    assert second.run_dir == first.run_dir
    return first, second
