"""Pretraining with ``data.format: device``: images decoded once, held as one uint8 tensor on the
training device (here the CPU), crops made there in batches; the KNN bank and the validation images
on the device too, bad settings, and an exact resume after SIGKILL. Every method's and branch's first
step on this path is pinned by tests/test_golden_steps.py (family device-format)."""

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


def device_cfg(method: str, cifar_train, tmp_path, cache, **overrides):
    return tiny_cfg(method, cifar_train, tmp_path, data__format="device",
                    data__device__cache_dir=str(cache), **overrides)


def test_bank_and_validation_images_are_held_too(cifar_train, cifar_test, tmp_path, device_cache):
    from solo_mixmask.data.resident import ResidentEvalLoader, ResidentLoader

    cfg = device_cfg("simclr", cifar_train, tmp_path, device_cache, val_path=cifar_test,
                     knn_eval__enabled=True, knn_eval__bank="clean")
    _, data, _ = prepare(cfg)
    train, val, bank = data.train, data.val, data.bank
    assert isinstance(train, ResidentLoader) and isinstance(val, ResidentEvalLoader)
    assert isinstance(bank, ResidentEvalLoader) and bank.images is train.images  # one copy
    x, y = next(iter(val))
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64


def test_device_format_runs_with_knn_and_writes_a_checkpoint(cifar_train, cifar_test, tmp_path,
                                                             device_cache):
    cfg = device_cfg("mixmask_mocov2plus", cifar_train, tmp_path, device_cache, val_path=cifar_test,
                     knn_eval__enabled=True, knn_eval__bank="clean",
                     knn_eval__k=20, knn_eval__distance_func="cosine")
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert result.checkpoint.name.endswith("-ep=0.ckpt")
    assert 10 <= result.metrics["val_knn_acc1"] <= 100  # a real KNN on the held images
    assert list(device_cache.glob("*.npy"))  # the decoded training images, cached


def test_compiled_augmentations_are_a_gpu_option_the_cpu_notes_and_skips(cifar_train, tmp_path,
                                                                          capsys, device_cache):
    """``performance.compile_augmentations`` compiles the recipe's dense (GPU) form; on the CPU the
    run says once that it is ignored and trains with the eager CPU form, past the second batch
    (where a compiled CPU form would fail on its per-image crops)."""
    cfg = device_cfg("simclr", cifar_train, tmp_path, device_cache,
                     performance__compile_augmentations=True, limit_train_batches=3)
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert result.checkpoint.name.endswith("-ep=0.ckpt")
    notices = [line for line in capsys.readouterr().err.splitlines()
               if "compile_augmentations" in line]
    assert notices == ["notice: performance.compile_augmentations=true is ignored on the CPU (its "
                       "form of the recipe runs eagerly; the compiled form is for GPUs)"]


def test_augment_ahead_trains_the_same_weights_and_notes_the_cpu(cifar_train, tmp_path, capsys,
                                                                  device_cache):
    """``performance.augment_ahead`` makes each batch one step early (on a side stream on a GPU):
    on the CPU, in line, with one notice, and the run ends with the weights of the run without
    it."""
    def run(folder, **kw):
        cfg = device_cfg("mixmask_byol", cifar_train, tmp_path / folder, device_cache,
                         limit_train_batches=4, **kw)
        result = pretrain(cfg, trainer_kwargs={"logger": False})
        return torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"]

    plain = run("plain")
    assert "augment_ahead" not in capsys.readouterr().err
    ahead = run("ahead", performance__augment_ahead=True)
    notices = [line for line in capsys.readouterr().err.splitlines() if "augment_ahead" in line]
    assert notices == ["notice: performance.augment_ahead=true has no side stream on the CPU: "
                       "each batch is made one batch early in line, the same batches"]
    assert [k for k in plain if not torch.equal(plain[k], ahead[k])] == []


@pytest.mark.parametrize("override,message", [
    ("data.device.max_bytes=1000", "above data.device.max_bytes=1,000"),
    ("data.device.size=4", "data.device.size=4: must be at least 8"),
    ("data.device.cache_dr=/tmp", "unknown key 'data.device.cache_dr'"),
])
def test_bad_device_settings(override, message, cifar_train, tmp_path, capsys, device_cache):
    cfg = device_cfg("byol", cifar_train, tmp_path, device_cache)
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    code = main(["pretrain", "--config-path", str(tmp_path), "--config-name", "cfg.yaml", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "trained_models").exists()


@pytest.mark.slow
@pytest.mark.long  # a killed run and its resume (about 10 s); CI's long run
def test_kill9_then_resume_replays_the_device_data_order(cifar_train, tmp_path, device_cache):
    """SIGKILL inside epoch 1, resumed from the end of epoch 0: the weights after epoch 2 equal
    the uninterrupted run's (same order, same batched crops, same masks). The uninterrupted and
    the resumed runs are in this process, on one thread like the killed command."""
    def cfg(folder):
        folder.mkdir(exist_ok=True)
        c = device_cfg("mixmask_mocov2plus", cifar_train, folder, device_cache, max_epochs=3,
                       optimizer__batch_size=16, limit_train_batches=6,
                       auto_resume__enabled=True, method_kwargs__queue_size=128,
                       method_kwargs__unmix__enabled=True)
        (folder / "cfg.yaml").write_text(OmegaConf.to_yaml(c))
        return c

    def final(result):
        assert result.checkpoint.name.endswith("-ep=2.ckpt")
        return torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"]

    ref, killed = tmp_path / "reference", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "tests/helpers/signal_at_step.py"), "SIGKILL", "9",
           "pretrain", "--config-path", str(killed), "--config-name", "cfg.yaml"]
    killed_cfg = cfg(killed)
    proc = subprocess.run(cmd, cwd=killed, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = final(pretrain(cfg(ref)))
        got = final(pretrain(killed_cfg))  # auto-resume finds the killed run
    finally:
        torch.set_num_threads(threads)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
