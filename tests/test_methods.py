"""The methods on real CIFAR-10 images: their losses fall, solo-learn's batch format, MoCo's queue
and SplitBatchNorm, and the data every variant sees. Each method's and branch's first step is pinned
by tests/test_golden_steps.py."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import tiny_cfg
from solo_mixmask.data.loaders import build_pretrain_dataset, build_pretrain_loader
from solo_mixmask.data.spec import LoaderSpec
from solo_mixmask.engine.pretrain import parse_pretrain_cfg, pretrain
from solo_mixmask.methods import METHODS


class StepLosses(Callback):
    """The SSL loss and the MixMask term of every step."""

    def __init__(self) -> None:
        self.ssl: list[float] = []
        self.mixmask: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.ssl.append(float(metrics["train_ssl_loss_step"]))
        self.mixmask.append(float(metrics["train_mixmask_loss_step"]))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("method", ["mixmask_byol", "mixmask_simclr", "mixmask_simsiam"])
def test_the_ssl_loss_and_the_mixmask_term_fall_on_real_images(method, cifar_train, tmp_path):
    """60 steps (two epochs of 30) of 16 real CIFAR-10 images: the last ten steps' mean is below
    that of steps 3-12, for the method's own loss and for the MixMask term (both trained through
    the same encoder; SimCLR's MixMask term falls slowest at this batch, about 1.5%).
    MoCo is left out: its InfoNCE against a queue that fills with ever newer keys rises before it
    falls, later than 30 steps; tests/test_golden_steps.py pins its first step instead."""
    cfg = tiny_cfg(method, cifar_train, tmp_path, checkpoint__enabled=False,
                   limit_train_batches=30, optimizer__batch_size=16, max_epochs=2)
    losses = StepLosses()
    pretrain(cfg, callbacks=[losses], trainer_kwargs={"logger": False})
    assert len(losses.ssl) == 60
    for name, curve in (("ssl", losses.ssl), ("mixmask", losses.mixmask)):
        early, late = mean(curve[2:12]), mean(curve[-10:])
        assert late < early - 0.01 * abs(early) - 1e-3, (name, early, late)


def test_batch_format_is_solo_learns(cifar_train, tmp_path):
    cfg = parse_pretrain_cfg(tiny_cfg("byol", cifar_train, tmp_path))
    spec = LoaderSpec.from_config(cfg, gpu=False)
    loader = build_pretrain_loader(spec, build_pretrain_dataset(spec))
    indexes, crops, targets = next(iter(loader))
    assert len(crops) == 2 and crops[0].shape == (32, 3, 32, 32)
    assert indexes.dtype == torch.long and len(set(indexes.tolist())) == 32
    assert targets.min() >= 0 and targets.max() < 10
    # real indexes: the target of each index is the dataset's label of that file
    ds = loader.dataset
    assert all(ds.targets[i] == t for i, t in zip(indexes.tolist(), targets.tolist()))
    # normalised real images, not constants
    assert -3 < crops[0].mean() < 3 and crops[0].std() > 0.3


def test_moco_queue_is_unchanged_until_every_term_is_computed(cifar_train, tmp_path):
    cfg = parse_pretrain_cfg(tiny_cfg("mixmask_mocov2plus", cifar_train, tmp_path,
                                      method_kwargs__unmix__enabled=True))
    model = METHODS[cfg.method](cfg)
    spec = LoaderSpec.from_config(cfg, gpu=False)
    loader = build_pretrain_loader(spec, build_pretrain_dataset(spec))
    batch = next(iter(loader))
    before = model.queue.clone()
    ptr = int(model.queue_ptr)
    calls = []
    original = model.mix_loss

    def observed(emb, out, crop):
        # every mixed term sees the untouched queue, through the step's snapshot
        calls.append((torch.equal(model.queue, before), torch.equal(out["queue"], before)))
        return original(emb, out, crop)

    model.mix_loss = observed  # type: ignore[method-assign]
    captured = {}
    original_after = model.after_ssl_step

    def after(out):
        captured["keys"] = out["keys"][1].clone()
        original_after(out)

    model.after_ssl_step = after  # type: ignore[method-assign]
    model.training_step(batch, 0)
    assert len(calls) >= 4  # Un-Mix and MixMask, two terms each
    assert all(a and b for a, b in calls)
    n = len(captured["keys"])
    # enqueued once, after the terms: this step's keys sit at the old pointer
    assert torch.allclose(model.queue[model.queue_of(1), :, ptr:ptr + n], captured["keys"].T)
    assert int(model.queue_ptr) == (ptr + n) % cfg.method_kwargs.queue_size
    # and no current key was a negative of the mixed queries
    sims = captured["keys"] @ before[model.queue_of(1)]
    assert sims.max() < 0.9999


@pytest.mark.parametrize("split_query", [False, True])
def test_moco_splits_key_batchnorm_and_queries_only_when_asked(split_query, cifar_train, tmp_path):
    from solo_mixmask.backbones import SplitBatchNorm2d

    cfg = parse_pretrain_cfg(tiny_cfg("mocov2plus", cifar_train, tmp_path,
                                      method_kwargs__split_query_bn=split_query))
    model = METHODS[cfg.method](cfg)

    def split_layers(net: torch.nn.Module) -> set[int]:
        return {m.num_splits for m in net.modules() if isinstance(m, SplitBatchNorm2d)}

    assert cfg.method_kwargs.bn_splits == 8  # one process, batch 32: auto splits in 8
    assert split_layers(model.momentum_backbone) == {8}
    assert split_layers(model.backbone) == ({8} if split_query else set())
    # both encoders still hold the same weights and buffers under the same keys
    assert model.backbone.state_dict().keys() == model.momentum_backbone.state_dict().keys()


def test_variants_see_the_same_data_order_and_augmentations(cifar_train, tmp_path):
    """Same seed: vanilla, MixMask and erase-based runs get identical batches, epoch after epoch
    (the branches draw from their own generator, not from the data stream)."""
    class Record(Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[list[int], float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.seen.append((batch[0].tolist(), float(batch[1][1].double().sum())))

    seen = []
    for method, extra in (("mocov2plus", {}), ("mixmask_mocov2plus", {}),
                          ("mixmask_mocov2plus", {"method_kwargs__mixmask__fill": "noise"})):
        cfg = tiny_cfg(method, cifar_train, tmp_path / method, max_epochs=2,
                       limit_train_batches=3, checkpoint__enabled=False,
                       method_kwargs__symmetric=False, **extra)
        rec = Record()
        pretrain(cfg, callbacks=[rec], trainer_kwargs={"logger": False})
        seen.append(rec.seen)
    assert len(seen[0]) == 6
    assert seen[0] == seen[1] == seen[2]
