"""A run killed with SIGKILL or stopped with Ctrl-C mid-epoch resumes from its checkpoint to exactly
the weights of the uninterrupted run; auto-resume finds the right run."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.engine.checkpoint import find_resumable
from solo_mixmask.engine.pretrain import parse_pretrain_cfg, pretrain


class CaptureAtStart(Callback):
    """Records the state the resumed run starts from (after Lightning restored the checkpoint)."""

    def __init__(self) -> None:
        self.state: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "queue": pl_module.queue.clone(),
            "queue_ptr": pl_module.queue_ptr.clone(),
            "momentum": {k: v.clone() for k, v in pl_module.momentum_backbone.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            "rng": pl_module.branches.state_dict(),
            "tau": pl_module.current_tau(),
        }


def _exact_cfg(cifar_train, tmp_path, workers: int):
    """MixMask* on MoCo: data order, crops, masks, permutations, Beta draws and the key shuffle
    all draw randomness."""
    return tiny_cfg("mixmask_mocov2plus", cifar_train, tmp_path, max_epochs=3,
                    optimizer__batch_size=16, limit_train_batches=6, auto_resume__enabled=True,
                    method_kwargs__queue_size=128, method_kwargs__unmix__enabled=True,
                    data__num_workers=workers)


@pytest.fixture
def one_thread():
    """Runs in this process use one thread, as the command-line runs (OMP_NUM_THREADS=1): the
    convolutions' results depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cli(tmp_path, name: str, signal_at: tuple[str, int]) -> subprocess.Popen:
    """``solo-mixmask pretrain`` on ``tmp_path/name``, sending itself ``signal_at`` = (signal, step)
    after that training step (tests/helpers/signal_at_step.py)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
           "OMP_NUM_THREADS": "1"}
    head = [sys.executable, str(REPO / "tests" / "helpers" / "signal_at_step.py"), *map(str, signal_at)]
    return subprocess.Popen(
        [*head, "pretrain", "--config-path", str(tmp_path), "--config-name", name],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _weights(ckpt) -> dict:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {**state["state_dict"], "global_step": torch.tensor(state["global_step"])}


@pytest.fixture(scope="module")
def reference(cifar_train, tmp_path_factory) -> dict:
    """The uninterrupted run's weights at the end of epoch 2 (one thread, no workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pretrain(_exact_cfg(cifar_train, tmp_path_factory.mktemp("reference"), workers=0))
    finally:
        torch.set_num_threads(before)
    assert result.checkpoint.name.endswith("-ep=2.ckpt")
    return _weights(result.checkpoint)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
@pytest.mark.long  # a killed run and its resume (about 10 s); CI's long run
def test_kill9_inside_an_epoch_then_auto_resume_is_bit_exact(cifar_train, tmp_path, reference,
                                                            one_thread):
    """SIGKILL inside epoch 1 (two loader workers): auto-resume finds the run (never a torn
    temporary file), restores exactly what the checkpoint holds (queue, momentum encoder,
    optimizer, scheduler, the branches' generators), continues in the same folder, replaces the
    checkpoint, and ends epoch 2 with the uninterrupted run's weights, queue and buffers."""
    cfg = _exact_cfg(cifar_train, tmp_path, workers=2)
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    root = tmp_path / "trained_models" / "mixmask_mocov2plus"
    killed = _cli(tmp_path, "cfg.yaml", ("SIGKILL", 9))  # epoch 1 is steps 6..11
    assert killed.wait(600) == -signal.SIGKILL
    assert [p.name.split("-")[-1] for p in root.glob("*/*.ckpt")] == ["ep=0.ckpt"]
    parsed = parse_pretrain_cfg(cfg.copy())
    ckpt_path = find_resumable(parsed, root, max_hours=1)
    assert ckpt_path is not None
    # a torn temporary file from a kill during a save is never picked up
    (ckpt_path.parent / (ckpt_path.name.replace("ep=", "ep=9") + ".tmp")).write_bytes(b"torn")
    assert find_resumable(parsed, root, max_hours=1) == ckpt_path
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)

    probe = CaptureAtStart()
    result = pretrain(cfg, callbacks=[probe])  # auto_resume finds the run
    s = probe.state
    assert s["epoch"] == saved["epoch"] + 1 and s["global_step"] == saved["global_step"]
    sd = saved["state_dict"]
    assert torch.equal(s["queue"], sd["queue"]) and torch.equal(s["queue_ptr"], sd["queue_ptr"])
    for k, v in s["momentum"].items():
        assert torch.equal(v, sd[f"momentum_backbone.{k}"]), k
    opt = saved["optimizer_states"][0]["state"]
    assert opt and all(torch.equal(s["optimizer"]["state"][i]["momentum_buffer"],
                                   opt[i]["momentum_buffer"]) for i in opt)
    assert s["scheduler"]["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
    assert s["rng"] == saved["mixmask_branches"]
    assert result.run_dir == ckpt_path.parent  # continued in the same run directory
    assert result.checkpoint.name.endswith("-ep=2.ckpt")
    assert not ckpt_path.exists()  # the previous checkpoint was replaced, not kept
    _assert_same(_weights(result.checkpoint), reference)


@pytest.mark.slow
@pytest.mark.long  # a killed run and its resume (about 10 s); CI's long run
def test_ctrl_c_saves_the_step_and_resumes_to_the_same_weights(cifar_train, tmp_path, reference,
                                                               one_thread):
    """Ctrl-C inside epoch 1 (one loader worker): exit code 130, one line naming the saved
    checkpoint; resuming from it gives the uninterrupted run's weights at the end of epoch 2."""
    cfg = _exact_cfg(cifar_train, tmp_path, workers=1)
    cfg.auto_resume.enabled = False
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    root = tmp_path / "trained_models" / "mixmask_mocov2plus"
    proc = _cli(tmp_path, "cfg.yaml", ("SIGINT", 8))
    assert proc.wait(600) == 130
    err = proc.stderr.read().strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    (saved,) = list(root.glob("*/*.ckpt"))  # the interrupted state replaced ep=0
    assert saved.name.endswith("-ep=1-step=8.ckpt")  # saved before the next step
    assert err[-1] == (f"interrupted at epoch 1, step 8: saved {saved}; resume with the same "
                       f"command plus resume_from_checkpoint={saved}")
    cfg.resume_from_checkpoint = str(saved)
    result = pretrain(cfg)
    _assert_same(_weights(result.checkpoint), reference)


def test_auto_resume_finds_a_run_started_before_an_option_existed(tmp_path):
    """A run whose args.json lacks an option added since (data.device here) is still the same run;
    one that differs in a setting both know is not."""
    import json

    cfg = parse_pretrain_cfg(tiny_cfg("mocov2plus", tmp_path, tmp_path, max_epochs=2))
    root = tmp_path / "runs"
    for version, seed in (("older", cfg.seed), ("reseeded", cfg.seed + 1)):
        run = root / version
        run.mkdir(parents=True)
        saved = OmegaConf.to_container(cfg, resolve=True)
        saved["seed"] = seed
        del saved["data"]["device"]
        (run / "args.json").write_text(json.dumps(saved))
        (run / f"{cfg.name}-{version}-ep=0.ckpt").write_bytes(b"")
    assert find_resumable(cfg, root, max_hours=1) == root / "older" / f"{cfg.name}-older-ep=0.ckpt"
