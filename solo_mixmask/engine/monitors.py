"""Monitors that run alongside training."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from ..utils.features import extract_features
from ..utils.knn import knn_accuracy


class KNNMonitor(Callback):
    """KNN of the backbone (or of the projection head's output) every ``frequency`` epochs, with
    a clean (unaugmented) train bank, as in InstDisc / Un-Mix; weighted or majority vote. Logs
    ``val_knn_acc1`` and ``val_knn_acc5``."""

    def __init__(self, train_loader: DataLoader, test_loader: DataLoader, num_classes: int,
                 k: int = 200, T: float = 0.1, distance: str = "cosine",
                 frequency: int = 1, feature: str = "backbone", vote: str = "weighted") -> None:
        self.train_loader, self.test_loader = train_loader, test_loader
        self.num_classes = num_classes
        self.k, self.T, self.distance, self.vote = k, T, distance, vote
        self.feature = feature
        self.frequency = max(1, int(frequency))

    def evaluate(self, pl_module: pl.LightningModule) -> tuple[float, float]:
        encoder = pl_module.knn_encoder(self.feature)
        device = pl_module.device
        cl = bool(getattr(pl_module, "channels_last", False))
        tr_f, tr_y = extract_features(encoder, self.train_loader, device, cl)
        te_f, te_y = extract_features(encoder, self.test_loader, device, cl)
        return knn_accuracy(tr_f, tr_y, te_f, te_y, self.num_classes, self.k, self.T,
                            self.distance, vote=self.vote)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.frequency and not last:
            return
        top1, top5 = self.evaluate(pl_module)
        pl_module.log_dict({"val_knn_acc1": top1, "val_knn_acc5": top5}, on_epoch=True,
                           prog_bar=True)
