"""The base class every method builds on: backbone, online classifier, online KNN, optimisation.

A method implements ``ssl_forward(crops) -> dict`` (with at least ``loss`` and ``feats``, the
backbone features of each crop). Methods that MixMask can extend also implement ``mix_embed`` (the
query-side embedding of an image batch) and ``mix_loss`` (per-sample loss of such embeddings against
the targets of the other crop). ``training_step`` runs ``ssl_forward``, then ``branch_losses`` (the
hook where MixMask adds its terms), then ``after_ssl_step`` (MoCo's enqueue), so state updates always
come after every loss term.

A method takes the whole validated config, as solo-learn's ``METHODS[name](cfg)`` does (the
solo-learn adapter keeps that contract, and the config is stored in each checkpoint): it is where
the sections meet. It hands each part its own section and reads no key with a default: the
backbone builder ``backbone``, ``configure_optimization`` ``optimizer`` and ``scheduler``, the
branches their parsed ``BranchConfig``, the KNN metric the ``knn_eval`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..backbones import BACKBONES, create_backbone, is_known_backbone
from ..config.validation import validate
from ..errors import ConfigError
from ..utils.knn import knn_accuracy
from ..utils.momentum import copy_params, ema_update, tau_at
from ..utils.optim import configure_optimization


class KNNEncoder(nn.Module):
    """A method's backbone, optionally followed by its projection head, as one module (its
    train/eval mode is theirs), for feature extraction."""

    def __init__(self, method: BaseMethod, feature: str = "backbone") -> None:
        super().__init__()
        self.feature = feature
        self.backbone = method.backbone
        self.head = method.projector if feature == "projector" else None
        self._project = method.project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return self._project(feats) if self.head is not None else feats


@dataclass
class NoKwargs:
    """A method without ``method_kwargs``."""


class BaseMethod(pl.LightningModule):
    """Backbone + online linear classifier + online KNN + optimizer/scheduler construction."""

    #: the schema of ``method_kwargs`` (a dataclass; fields without a default are required)
    kwargs_schema: ClassVar[type] = NoKwargs
    #: keys only the MixMask variant of the method takes (``methods/mixmask.py``)
    mix_kwargs_schema: ClassVar[Optional[type]] = None
    #: whether the base loss treats both crops as queries (a MixMask branch may then mix both).
    symmetric: bool = True

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.kw = cfg.method_kwargs
        self.backbone = self.build_backbone(self.query_bn_splits)
        self.features_dim = int(self.backbone.num_features)
        self.num_classes = int(cfg.data.num_classes or 1)
        self.classifier = nn.Linear(self.features_dim, self.num_classes)
        # resolved by the config parse (``auto`` is true: it wins on GPUs and, measured, on the CPU)
        perf = cfg.performance
        self.channels_last = perf.channels_last is True and not perf.disable_channel_last
        self.knn_on = bool(cfg.knn_eval.enabled) and cfg.knn_eval.bank == "crops"
        #: every training target is -1 (``data.no_labels``): the online KNN keeps no crops
        self.no_labels = bool(cfg.data.no_labels)
        self._knn_train: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._knn_test: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_outputs: list[dict[str, torch.Tensor]] = []
        #: optimizer steps of the whole run, set by the engine from the config and the loader;
        #: Lightning's ``estimated_stepping_batches`` would build the training iterator before a
        #: checkpoint's data position is restored
        self.total_steps: Optional[int] = None

    # ----------------------------------------------------------------- config
    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: DictConfig) -> DictConfig:
        """Validates ``method_kwargs`` against the method's schema (filling its defaults) and the
        settings that depend on other keys (called by ``engine.pretrain.parse_pretrain_cfg``
        after the common checks)."""
        cfg.method_kwargs = validate(cfg.method_kwargs, cls.kwargs_schema, "method_kwargs")
        if not is_known_backbone(str(cfg.backbone.name)):
            raise ConfigError(
                f"unknown backbone {cfg.backbone.name!r}: use one of {sorted(BACKBONES)} "
                "or a timm model name"
            )
        if cfg.data.num_large_crops != 2 or cfg.data.num_small_crops != 0:
            raise ConfigError(
                f"method {cfg.method!r} uses exactly 2 crops of the same size; the augmentations "
                f"give {cfg.data.num_large_crops} large and {cfg.data.num_small_crops} small"
            )
        return cfg

    # ---------------------------------------------------------------- modules
    @property
    def bn_splits(self) -> int:
        """SplitBatchNorm groups of the target (momentum) encoder; 1 is plain BatchNorm."""
        return 1

    @property
    def query_bn_splits(self) -> int:
        """SplitBatchNorm groups of the online encoder."""
        return 1

    def build_backbone(self, bn_splits: int = 1) -> nn.Module:
        kwargs = dict(OmegaConf.to_container(self.cfg.backbone.kwargs, resolve=True) or {})
        name = str(self.cfg.backbone.name)
        stem = kwargs.pop("cifar_stem", None)
        if name in BACKBONES:
            if stem in (None, "auto"):  # absent or auto: the small-image stem up to 64 px crops
                stem = int(self.cfg.augmentations[0].crop_size) <= 64
            return create_backbone(name, cifar_stem=bool(stem), bn_splits=bn_splits, **kwargs)
        return create_backbone(name, **kwargs)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(self.to_input(x))
        return {"feats": feats, "logits": self.classifier(feats.detach())}

    # ------------------------------------------------------------- SSL hooks
    def ssl_forward(self, crops: list[torch.Tensor]) -> dict[str, Any]:
        raise NotImplementedError

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Query-side embedding of a (mixed) image batch."""
        raise NotImplementedError(f"{type(self).__name__} does not support mixing branches")

    def mix_loss(self, emb: torch.Tensor, out: dict[str, Any], crop: int) -> torch.Tensor:
        """Per-sample loss of embeddings whose row i must match sample i of the crop other than
        ``crop``."""
        raise NotImplementedError(f"{type(self).__name__} does not support mixing branches")

    def branch_losses(self, crops: list[torch.Tensor],
                      out: dict[str, Any]) -> tuple[Optional[torch.Tensor], dict[str, Any]]:
        """Extra loss terms computed before any state update (MixMask overrides this)."""
        return None, {}

    def after_ssl_step(self, out: dict[str, Any]) -> None:
        """State updates that must follow every loss term (MoCo's queue)."""

    # --------------------------------------------------------------- training
    def training_step(self, batch: list[Any], batch_idx: int) -> torch.Tensor:
        _, crops, targets = batch
        crops = [self.to_input(c) for c in crops]
        out = self.ssl_forward(crops)
        loss = out["loss"]
        logs: dict[str, Any] = {"train_ssl_loss": out["loss"].detach()}
        extra, branch_logs = self.branch_losses(crops, out)
        if extra is not None:
            loss = loss + extra
            logs.update(branch_logs)
        self.after_ssl_step(out)

        feats = [f for f in out["feats"] if f is not None]
        cls_loss, acc1 = self._classifier_step(feats, targets)
        logs.update({"train_class_loss": cls_loss.detach(), "train_acc1": acc1})
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log_dict(logs, on_step=True, on_epoch=True)
        if self.knn_on and self._knn_epoch() and not self.no_labels:
            # unlabeled rows (-1) are dropped at the epoch's end: a boolean index has a
            # data-dependent size, which the host would have to wait for every step
            self._knn_train.append((self._knn_view(feats[0]), targets))
        return loss + cls_loss

    @staticmethod
    def _labeled(feats: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = targets != -1
        return feats[keep], targets[keep]

    def _classifier_step(self, feats: list[torch.Tensor],
                         targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and top-1 accuracy over the labeled rows (0 and 0 when there are none),
        with no value read back to the host: the mean over the labeled rows is their sum over
        their count, which is how ``cross_entropy`` with ``ignore_index`` averages."""
        f = torch.cat([x.detach() for x in feats])
        y = targets.repeat(len(feats))
        logits = self.classifier(f)
        keep = y != -1
        count = keep.sum().clamp_min(1)
        loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="sum") / count
        acc1 = ((logits.argmax(1) == y) & keep).float().sum() / count
        return loss, acc1.detach()

    # ------------------------------------------------------------------- KNN
    def project(self, feats: torch.Tensor) -> torch.Tensor:
        """The projection head's output for backbone features (``knn_eval.feature: projector``)."""
        raise NotImplementedError(f"{type(self).__name__} has no projection head")

    @torch.no_grad()
    def _knn_view(self, feats: torch.Tensor) -> torch.Tensor:
        feats = feats.detach()
        if self.cfg.knn_eval.feature == "projector":
            return self.project(feats).float()
        return feats

    def knn_encoder(self, feature: str = "backbone") -> nn.Module:
        """Images -> the features the KNN compares (backbone, or projection head output)."""
        return KNNEncoder(self, feature)

    def _knn_epoch(self) -> bool:
        freq = int(self.cfg.knn_eval.frequency)
        return (self.current_epoch + 1) % max(1, freq) == 0

    # ------------------------------------------------------------- validation
    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch[-2], batch[-1]
        out = self(x)
        n = torch.tensor(float(len(y)), device=y.device)
        keep = y != -1
        loss = F.cross_entropy(out["logits"], y, ignore_index=-1, reduction="sum")
        top = out["logits"].topk(min(5, self.num_classes), dim=1).indices
        acc1 = (top[:, 0] == y)[keep].float().sum()
        acc5 = (top == y[:, None]).any(1)[keep].float().sum()
        self._val_outputs.append({"n": n, "loss": loss, "acc1": acc1, "acc5": acc5})
        if self.knn_on and not self.trainer.sanity_checking and self._knn_epoch():
            self._knn_test.append((self._knn_view(out["feats"]), y))

    def on_validation_epoch_end(self) -> None:
        if self._val_outputs:
            total = {k: torch.stack([o[k] for o in self._val_outputs]).sum()
                     for k in self._val_outputs[0]}
            n = total["n"].clamp_min(1)
            self.log_dict({"val_loss": total["loss"] / n, "val_acc1": total["acc1"] / n * 100,
                           "val_acc5": total["acc5"] / n * 100}, sync_dist=True)
        self._val_outputs.clear()
        if self._knn_train and self._knn_test:
            tr_f, tr_y = self._labeled(torch.cat([f for f, _ in self._knn_train]),
                                       torch.cat([y for _, y in self._knn_train]))
            te_f = torch.cat([f for f, _ in self._knn_test])
            te_y = torch.cat([y for _, y in self._knn_test])
            knn = self.cfg.knn_eval
            top1, top5 = knn_accuracy(tr_f, tr_y, te_f, te_y, self.num_classes, k=int(knn.k),
                                      T=float(knn.T), distance=str(knn.distance_func),
                                      vote=str(knn.vote))
            self.log_dict({"val_knn_acc1": top1, "val_knn_acc5": top5}, sync_dist=True)
        if not self.trainer.sanity_checking:
            self._knn_train.clear()
            self._knn_test.clear()

    # ----------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups; a group may set ``lr``, ``weight_decay`` and ``fix_lr`` (no schedule)."""
        return [
            {"name": "backbone", "params": list(self.backbone.parameters())},
            {"name": "classifier", "params": list(self.classifier.parameters()),
             "lr": float(self.cfg.optimizer.classifier_lr), "weight_decay": 0.0},
        ]

    def configure_optimizers(self):
        return configure_optimization(self.param_groups(), self.cfg.optimizer, self.cfg.scheduler,
                                      self.stepping_batches, int(self.cfg.max_epochs))

    def stepping_batches(self) -> int:
        """Optimizer steps of the whole run (the engine's count, else Lightning's estimate)."""
        if self.total_steps is not None:
            return int(self.total_steps)
        return int(self.trainer.estimated_stepping_batches)

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cfg"] = OmegaConf.to_container(self.cfg, resolve=True)


class BaseMomentumMethod(BaseMethod):
    """Adds an EMA copy of the backbone (and of any pair in ``momentum_pairs``), updated after each
    optimizer step with the cosine tau schedule."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.momentum_backbone = self.build_backbone(self.bn_splits)
        copy_params(self.backbone, self.momentum_backbone)
        self._last_step = -1

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone)]

    def current_tau(self) -> float:
        steps = self.stepping_batches() if self._trainer else 0
        return tau_at(int(self.global_step), steps, float(self.cfg.momentum.base_tau),
                      float(self.cfg.momentum.final_tau))

    def on_train_start(self) -> None:
        self._last_step = int(self.global_step)

    @torch.no_grad()
    def momentum_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_backbone(x)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = int(self.global_step)
        if step != self._last_step:  # an optimizer step happened (gradient accumulation aware)
            tau = self.current_tau()
            for online, target in self.momentum_pairs:
                ema_update(online, target, tau)
            # a tensor filled on the device: Lightning would copy a Python float there, blocking
            self.log("tau", torch.full((), tau, dtype=torch.get_default_dtype(), device=self.device),
                     on_step=True, on_epoch=False)
        self._last_step = step
