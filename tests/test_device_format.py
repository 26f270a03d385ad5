"""Pretraining with ``data.format: device``: images decoded once, held as one uint8 tensor on the
training device (here the CPU), crops made there in batches; every method and branch, the KNN bank
and the validation images on the device too, and an exact resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.cli import main
from solo_mixmask.engine.pretrain import prepare, pretrain

BRANCHES = {
    "vanilla": {},
    "mixmask_star": {"mixmask": {"grid": 2, "permutation": "different"},
                     "unmix": {"enabled": True}},
    "erase": {"mixmask": {"fill": "noise"}},
}


def device_cfg(method: str, cifar_train, tmp_path, **overrides):
    return tiny_cfg(method, cifar_train, tmp_path, data__format="device",
                    data__device__cache_dir=str(tmp_path / "cache"), **overrides)


@pytest.mark.parametrize("variant", list(BRANCHES))
@pytest.mark.parametrize("method", ["mocov2plus", "byol", "simclr", "simsiam"])
def test_every_method_and_branch_trains(method, variant, cifar_train, tmp_path):
    name = method if variant == "vanilla" else f"mixmask_{method}"
    cfg = device_cfg(name, cifar_train, tmp_path, limit_train_batches=2,
                     checkpoint__enabled=False)
    cfg.method_kwargs.update(BRANCHES[variant])
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    loss = result.metrics["train_loss"]
    assert loss == loss and abs(loss) < 1e4


def test_bank_and_validation_images_are_held_too(cifar_train, cifar_test, tmp_path):
    from solo_mixmask.data.resident import ResidentEvalLoader, ResidentLoader

    cfg = device_cfg("simclr", cifar_train, tmp_path, val_path=cifar_test,
                     knn_eval__enabled=True, knn_eval__bank="clean")
    _, train, val, bank, _ = prepare(cfg)
    assert isinstance(train, ResidentLoader) and isinstance(val, ResidentEvalLoader)
    assert isinstance(bank, ResidentEvalLoader) and bank.images is train.images  # one copy
    x, y = next(iter(val))
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64


def test_device_format_runs_with_knn_and_writes_a_checkpoint(cifar_train, cifar_test, tmp_path):
    cfg = device_cfg("mixmask_mocov2plus", cifar_train, tmp_path, val_path=cifar_test,
                     knn_eval__enabled=True, knn_eval__bank="clean",
                     knn_eval__k=20, knn_eval__distance_func="cosine")
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert result.checkpoint.name.endswith("-ep=0.ckpt")
    assert 10 <= result.metrics["val_knn_acc1"] <= 100  # a real KNN on the held images
    assert list((tmp_path / "cache").glob("*.npy"))  # the decoded training images, cached


@pytest.mark.parametrize("override,message", [
    ("data.device.max_bytes=1000", "above data.device.max_bytes=1,000"),
    ("data.device.size=4", "data.device.size=4: must be at least 8"),
    ("data.device.cache_dr=/tmp", "unknown key 'data.device.cache_dr'"),
])
def test_bad_device_settings(override, message, cifar_train, tmp_path, capsys):
    cfg = device_cfg("byol", cifar_train, tmp_path)
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    code = main(["pretrain", "--config-path", str(tmp_path), "--config-name", "cfg.yaml", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "trained_models").exists()


@pytest.mark.slow
def test_kill9_then_resume_replays_the_device_data_order(cifar_train, tmp_path):
    """SIGKILL inside epoch 1, resumed from the end of epoch 0: the weights after epoch 2 equal
    the uninterrupted run's (same order, same batched crops, same masks)."""
    def cfg(folder):
        c = device_cfg("mixmask_mocov2plus", cifar_train, folder, max_epochs=3,
                       optimizer__batch_size=16, limit_train_batches=6,
                       auto_resume__enabled=True, method_kwargs__queue_size=128,
                       method_kwargs__unmix__enabled=True)
        folder.mkdir(exist_ok=True)
        (folder / "cfg.yaml").write_text(OmegaConf.to_yaml(c))

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
           "OMP_NUM_THREADS": "1"}

    def run(folder, *head):
        cmd = [*head, "pretrain", "--config-path", str(folder), "--config-name", "cfg.yaml"]
        return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)

    def final(folder):
        (ckpt,) = list(folder.glob("trained_models/*/*/*-ep=2.ckpt"))
        return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]

    ref, killed = tmp_path / "reference", tmp_path / "killed"
    cfg(ref)
    cfg(killed)
    assert run(ref, sys.executable, "-m", "solo_mixmask").returncode == 0
    signal_at = [sys.executable, str(REPO / "tests/helpers/signal_at_step.py"), "SIGKILL", "9"]
    assert run(killed, *signal_at).returncode == -signal.SIGKILL
    resumed = run(killed, sys.executable, "-m", "solo_mixmask")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = final(ref), final(killed)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
