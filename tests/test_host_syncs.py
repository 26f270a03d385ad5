"""The training step never makes the host wait for the device.

What is counted (benchmarks/host_syncs.py gives the rules): every torch call inside
``training_step`` that on a GPU would make the host wait for the device: a value read back
(``.item()``, ``bool``/``int``/``float`` of a tensor, ``.tolist()``, ``.cpu()``), a result whose size
depends on the values (``nonzero``, boolean-mask indexing) or a blocking host-to-device copy
(``torch.as_tensor(array, device=...)``, ``.to(device)`` without ``non_blocking``, a Python float
given to ``self.log``). On the CPU the device is simulated: the model's parameters and buffers, the
batch and everything computed from them are device tensors. The step counted is the second of a
Lightning fit (``self.log`` runs as in training); Lightning's work around the step is not counted.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import golden
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from host_syncs import count_host_syncs, count_step_syncs
from omegaconf import OmegaConf

from solo_mixmask.config import load_config
from solo_mixmask.engine.pretrain import build_model, prepare
from solo_mixmask.mixmask import BranchConfig, Branches, mixing, parse_branch_cfg
from solo_mixmask.utils.transfer import host_to_device

PAPER = golden.PRETRAIN / "paper" / "cifar100"


@pytest.fixture(autouse=True)
def one_thread():
    """What is counted does not depend on the thread count; on a busy 2-core machine two threads
    mostly wait on each other (conftest.py's ``pretrained`` does the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def built(name: str, tree: Path, work: Path, *extra: str) -> tuple[pl.LightningModule, list]:
    """A paper CIFAR config in the golden table's small form (tests/golden.py), and its first batch
    of real images."""
    path = PAPER / name
    cfg = OmegaConf.merge(load_config(str(path.parent), path.name),
                          OmegaConf.from_dotlist(golden.small_form(path, tree, work) + list(extra)))
    cfg, data, _ = prepare(cfg)
    pl.seed_everything(int(cfg.seed), verbose=False)
    model = build_model(cfg)
    return model, next(iter(data.train))


# ------------------------------------------------------------------------------ the counter
def test_the_counter_counts_a_planted_item_where_it_is_made():
    x = torch.randn(4, 3)
    with count_host_syncs(x) as syncs:
        y = (x * 2).sum(0)
        line = inspect.currentframe().f_lineno + 1
        y[0].item()  # the planted sync
    assert syncs.count == 1, syncs.locations
    assert syncs.events[0].kind == "value read (item)"
    assert syncs.events[0].where == f"{__file__}:{line}"


def test_the_counter_tells_device_tensors_from_host_ones():
    x = torch.randn(8)
    with count_host_syncs(x) as syncs:
        host = torch.randperm(8)  # made on the host: reading it costs nothing
        host.tolist()
        int(host[0])
        host.cpu()
        torch.full((), 0.5, device=x.device)  # filled on the device: no copy
        x[host_to_device(host, x.device)].sum()  # non-blocking (pinned on CUDA)
    assert syncs.count == 0, syncs.locations
    with count_host_syncs(x) as syncs:
        bool(x.sum() > 0)
        x[x > 0]
        x.cpu()
        x.nonzero()
        torch.as_tensor(np.arange(3), device=x.device)
        torch.randperm(8).to(x.device)
        torch.tensor(0.5, device=x.device)
        x[torch.randperm(8)]  # the index is copied to the device first
    kinds = [e.kind.split(" (")[0] for e in syncs.events]
    assert kinds == ["value read", "data-dependent size", "device-to-host copy",
                     "data-dependent size"] + ["blocking host-to-device copy"] * 4, syncs.locations


def test_a_blocking_copy_put_back_is_counted_at_its_line_in_the_package(monkeypatch):
    monkeypatch.setattr(mixing, "host_to_device",
                        lambda data, device: torch.as_tensor(data, device=device))
    x = torch.randn(4, 3, 8, 8)
    with count_host_syncs(x) as syncs:
        mixing.permutation(4, "random", np.random.default_rng(0), x.device)
    assert [e.kind for e in syncs.events] == ["blocking host-to-device copy (torch.as_tensor)"]
    path, line = syncs.events[0].where.rsplit(":", 1)
    assert path == "solo_mixmask/mixmask/mixing.py"
    source = Path(mixing.__file__).read_text().splitlines()[int(line) - 1]
    assert "host_to_device(rng.permutation(n), device)" in source


# ------------------------------------------------------------------ the steps of the methods
STEPS = {
    "mocov2plus_mixmask.yaml": [],
    # vanilla MoCo, with the online KNN of training crops on (it keeps crops every step)
    "mocov2plus.yaml": ["knn_eval.enabled=true", "knn_eval.bank=crops", "knn_eval.frequency=1"],
    "byol_mixmask.yaml": [],
    "simclr_mixmask.yaml": [],
    "simsiam_mixmask.yaml": [],
}


@pytest.mark.parametrize("name", list(STEPS))
def test_a_training_step_makes_no_host_sync(name, cifar_train, tmp_path):
    model, batch = built(name, cifar_train, tmp_path, *STEPS[name])
    count, locations = count_step_syncs(model, batch)
    assert count == 0, "host syncs inside training_step:\n" + "\n".join(locations)


def branch(mixmask: Optional[dict] = None, unmix: Optional[dict] = None) -> BranchConfig:
    """The resolved branches of ``method_kwargs`` (16 px crops, a symmetric base loss)."""
    return parse_branch_cfg({"mixmask": mixmask or {}, "unmix": unmix or {}}, 16, symmetric=True)


BRANCHES = {
    "mixmask": branch(),
    "mixmask-random-per-sample-discrete": branch({"permutation": "random", "per_sample": True,
                                                  "pattern": "discrete", "grid": 4}),
    "mixmask-ratio-range": branch({"ratio": [0.3, 0.7]}),
    "unmix-and-mixmask": branch({"permutation": "random", "targets": "both"},
                                {"enabled": True}),
    "erase-zero": branch({"fill": "zero"}),
    "erase-noise": branch({"fill": "noise"}),
    "erase-mean": branch({"fill": "mean"}),
}


@pytest.mark.parametrize("variant", list(BRANCHES))
def test_every_branch_makes_no_host_sync_and_logs_tensors(variant):
    """Each branch (the fills, permutations, mask patterns, Un-Mix) on its own; every value it logs
    is a tensor, which ``self.log`` takes without a copy to the device."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    head = torch.nn.Linear(3 * 16 * 16, 4)
    targets = torch.randn(8, 4)
    branches = Branches(BRANCHES[variant], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=0)
    with count_host_syncs(x, targets, *head.parameters()) as syncs:
        loss, logs = branches(x, lambda v: head(v.flatten(1)),
                              lambda e: (e - targets).pow(2).sum(1),
                              lambda e: (e + targets).pow(2).sum(1))
    assert syncs.count == 0, syncs.locations
    assert logs and all(torch.is_tensor(v) and v.numel() == 1 for v in logs.values()), logs
    assert torch.isfinite(loss)


# ------------------------------------------------------------------------- MoCo's pointer
def test_moco_queue_position_is_the_buffer_after_steps_and_a_checkpoint(cifar_train, tmp_path):
    model, batch = built("mocov2plus.yaml", cifar_train, tmp_path)
    # keys enqueued per step: both crops' when they share one queue (the paper's CIFAR recipe)
    n = len(batch[-1]) * (2 if model.shared_queue else 1)
    size = int(model.queue.shape[-1])
    model.train()
    for _ in range(3):
        model.training_step(batch, 0)
    assert model.queue_position == int(model.queue_ptr) == 3 * n % size
    assert model.queue_position > 0  # the round trip below can tell it from a fresh model's

    torch.save({"state_dict": model.state_dict()}, tmp_path / "step3.ckpt")
    state = torch.load(tmp_path / "step3.ckpt", weights_only=True)["state_dict"]
    fresh = build_model(model.cfg)
    assert fresh.queue_position == 0
    fresh.load_state_dict(state)  # what Lightning does when it resumes
    assert fresh.queue_position == int(fresh.queue_ptr) == 3 * n % size
    fresh.train()
    fresh.training_step(batch, 0)
    assert fresh.queue_position == int(fresh.queue_ptr) == 4 * n % size
