"""Two CPU processes (gloo) through Lightning DDP: MoCo's queue holds both ranks' keys, SimCLR's
negatives come from both ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.losses import simclr_loss_func


def run_ddp(cfg, tmp_path) -> list[dict]:
    path = tmp_path / "cfg.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    out = tmp_path / "probe"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(REPO / "tests/helpers/ddp_probe.py"), str(path),
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def ddp_cfg(method, cifar_train, tmp_path, **kw):
    return tiny_cfg(method, cifar_train, tmp_path, strategy="ddp", devices=2,
                    limit_train_batches=2, checkpoint__enabled=False, optimizer__batch_size=16,
                    **kw)


@pytest.mark.slow
def test_moco_queue_holds_keys_from_both_ranks(cifar_train, tmp_path):
    ranks = run_ddp(ddp_cfg("mixmask_mocov2plus", cifar_train, tmp_path,
                            method_kwargs__symmetric=False), tmp_path)
    assert [r["world"] for r in ranks] == [2, 2]
    k0, k1 = ranks[0]["moco"]["keys"], ranks[1]["moco"]["keys"]
    assert not torch.allclose(k0, k1)
    expected = torch.cat([k0, k1]).T  # rank order
    for r in ranks:
        assert torch.allclose(r["moco"]["block"], expected, atol=1e-6)
    assert ranks[0]["draw"] != ranks[1]["draw"]  # each rank draws its own masks


@pytest.mark.slow
def test_simclr_sees_negatives_from_both_ranks(cifar_train, tmp_path):
    ranks = run_ddp(ddp_cfg("simclr", cifar_train, tmp_path), tmp_path)
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
