"""The engine around a run: what it leaves behind once ``pretrain()`` returns."""

from __future__ import annotations

import multiprocessing

from conftest import tiny_cfg
from solo_mixmask.engine.pretrain import pretrain


def test_a_finished_run_leaves_no_loader_workers_behind(cifar_train, cifar_test, tmp_path):
    """Persistent DataLoader workers (training, KNN bank, validation) stop with the run: left to
    the garbage collector, each would later stall this process for its 5 s join timeout."""
    cfg = tiny_cfg("simclr", cifar_train, tmp_path, val_path=cifar_test, data__num_workers=2,
                   limit_train_batches=2, checkpoint__enabled=False,
                   knn_eval={"enabled": True, "bank": "clean", "k": 5})
    assert multiprocessing.active_children() == []
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert 0 <= result.metrics["val_knn_acc1"] <= 100  # the bank and validation loaders ran
    assert multiprocessing.active_children() == []
