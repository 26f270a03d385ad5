"""Two CPU processes (gloo) through Lightning DDP, one launch for every check: MoCo's queue holds both
ranks' keys, SimCLR's negatives come from both ranks, and the device-resident data (its loader built
before the process group exists, as the engine builds it) gives each rank DistributedSampler's share
of every epoch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.losses import simclr_loss_func


def run_ddp(cfgs, tmp_path) -> list[list[dict]]:
    """What each rank saw in each config, all configs trained in one launch of two processes."""
    paths = []
    for i, cfg in enumerate(cfgs):
        paths.append(tmp_path / f"cfg{i}.yaml")
        paths[-1].write_text(OmegaConf.to_yaml(cfg))
    out = tmp_path / "probe"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(REPO / "tests/helpers/ddp_probe.py"), str(out),
                           *map(str, paths)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [[torch.load(out / str(i) / f"rank{r}.pt", weights_only=True) for r in range(2)]
            for i in range(len(cfgs))]


@pytest.fixture(scope="module")
def ranks(cifar_train, tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("ddp")
    device = tiny_cfg("simclr", cifar_train, tmp / "device", strategy="ddp", devices=2,
                      checkpoint__enabled=False, optimizer__batch_size=25, max_epochs=2, seed=7,
                      data__format="device", data__device__cache_dir=str(tmp / "cache"),
                      # at width 0.0625 (a 4-channel stem) DDP's backward with channels_last
                      # corrupts the heap on the CPU (torch 2.14.1, gloo; 0.125 does not)
                      backbone__kwargs__width=0.125)
    moco, simclr, device = run_ddp([ddp_cfg("mixmask_mocov2plus", cifar_train, tmp / "moco",
                                            method_kwargs__symmetric=False),
                                    ddp_cfg("simclr", cifar_train, tmp / "simclr"), device], tmp)
    return {"moco": moco, "simclr": simclr, "device": device}


def ddp_cfg(method, cifar_train, tmp_path, **kw):
    return tiny_cfg(method, cifar_train, tmp_path, strategy="ddp", devices=2,
                    limit_train_batches=2, checkpoint__enabled=False, optimizer__batch_size=16,
                    **kw)


@pytest.mark.slow
def test_moco_queue_holds_keys_from_both_ranks(ranks):
    ranks = ranks["moco"]
    assert [r["world"] for r in ranks] == [2, 2]
    k0, k1 = ranks[0]["moco"]["keys"], ranks[1]["moco"]["keys"]
    assert not torch.allclose(k0, k1)
    expected = torch.cat([k0, k1]).T  # rank order
    for r in ranks:
        assert torch.allclose(r["moco"]["block"], expected, atol=1e-6)
    assert ranks[0]["draw"] != ranks[1]["draw"]  # each rank draws its own masks


@pytest.mark.slow
def test_simclr_sees_negatives_from_both_ranks(ranks):
    ranks = ranks["simclr"]
    z1 = torch.cat([r["simclr"]["z1"] for r in ranks])
    z2 = torch.cat([r["simclr"]["z2"] for r in ranks])
    reference = simclr_loss_func(z1, z2, 0.2, reduction="none")  # one process, whole batch
    n, total = len(ranks[0]["simclr"]["z1"]), len(z1)
    for r, seen in enumerate(ranks):
        rows = torch.cat([reference[r * n:(r + 1) * n], reference[total + r * n:total + (r + 1) * n]])
        assert torch.allclose(seen["simclr"]["values"], rows, atol=1e-5)
    local_only = simclr_loss_func(ranks[0]["simclr"]["z1"], ranks[0]["simclr"]["z2"], 0.2,
                                  reduction="none")
    assert not torch.allclose(local_only, ranks[0]["simclr"]["values"], atol=1e-3)


def sampler_indices(n: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    from torch.utils.data import DistributedSampler

    s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                           drop_last=False)
    s.set_epoch(epoch)
    return list(s)


@pytest.mark.slow
def test_device_data_gives_each_rank_its_share_of_every_epoch(ranks, cifar_train):
    ranks = ranks["device"]
    n = sum(1 for _ in cifar_train.rglob("*.jpg"))
    assert [r["world"] for r in ranks] == [2, 2] and n == 500
    for e in range(2):
        assert sorted(ranks[0]["indexes"][e] + ranks[1]["indexes"][e]) == list(range(n)), e
        for r in range(2):
            assert ranks[r]["indexes"][e] == sampler_indices(n, 7, e, r, 2)
    assert ranks[0]["indexes"][0] != ranks[0]["indexes"][1]  # a new order every epoch
