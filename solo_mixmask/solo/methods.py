"""MixMask variants of solo-learn's ``MoCoV2Plus``, ``BYOL``, ``SimCLR`` and ``SimSiam``.

Each variant is a subclass of solo-learn's own class whose ``training_step`` adds the loss of
``solo_mixmask.mixmask.Branches`` (MixMask, Un-Mix, erase), configured by ``method_kwargs.mixmask``
and ``method_kwargs.unmix`` exactly as in this package's engine. The mixing, the masks and the
lambda weighting live only in that core; here each method just says how to embed a mixed batch and
how to score an embedding against the other crop, per sample (solo-learn's loss functions return a
batch mean, so the per-sample forms come from ``solo_mixmask.losses``; they compute the same
values).

- BYOL, SimCLR, SimSiam: solo-learn's own ``training_step`` runs unchanged (its loss, online
  classifier, KNN and logs); the variant reads back the per-crop outputs it produced through the
  ``base_training_step`` / ``momentum_forward`` hooks and adds the branch loss.
- MoCoV2Plus: solo-learn enqueues the keys inside its step, but every term must see the same queue,
  so the variant restructures the step: one queue snapshot serves the original loss and the mixed
  terms, then the keys are enqueued once. ``method_kwargs.symmetric: false`` gives the paper's
  asymmetric MoCo v2 loss (query crop 1, key crop 2); the default keeps solo-learn's symmetric one.

With a symmetric base loss the mixture is built from crop 1 only unless ``mixmask.crops: both``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import omegaconf
import torch
import torch.nn.functional as F
from solo.losses.mocov2plus import mocov2plus_loss_func as solo_mocov2plus_loss
from solo.methods import BYOL, MoCoV2Plus, SimCLR, SimSiam
from solo.methods.base import BaseMethod
from solo.utils.misc import gather, get_rank, omegaconf_select

from ..config.branches import BranchConfig
from ..config.schema import LightningKeys
from ..config.validation import field_default
from ..errors import ConfigError
from ..losses import byol_loss_func, mixture_nce, mocov2plus_loss_func, simsiam_loss_func
from ..methods.mocov2plus import MoCoKwargs
from ..mixmask import Branches, parse_branch_cfg

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _is_symmetric(cls: type, cfg: omegaconf.DictConfig) -> bool:
    if issubclass(cls, MoCoV2Plus):
        return bool(omegaconf_select(cfg, "method_kwargs.symmetric",
                                     field_default(MoCoKwargs, "symmetric")))
    return True


def normalisation(cfg: omegaconf.DictConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std solo-learn normalises the first pipeline with (for the erase fills)."""
    from solo.data.pretrain_dataloader import build_transform_pipeline
    from torchvision import transforms

    try:
        pipeline = build_transform_pipeline(cfg.data.dataset, cfg.augmentations[0])
    except Exception:  # a partial config (e.g. a unit test): fall back to ImageNet statistics
        return IMAGENET_STATS
    for t in getattr(pipeline, "transforms", []):
        if isinstance(t, transforms.Normalize):
            return tuple(float(m) for m in t.mean), tuple(float(s) for s in t.std)
    return IMAGENET_STATS


class SoloMixMaskMixin:
    """The MixMask part shared by the four variants (config check, branches, checkpoint state)."""

    num_large_crops: int
    no_channel_last: bool

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)  # type: ignore[misc]
        spec = parse_branch_cfg(cfg.method_kwargs, int(cfg.augmentations[0].crop_size),
                                _is_symmetric(cls, cfg))
        # the resolved settings end up in solo-learn's args.json next to the checkpoints
        cfg.method_kwargs = omegaconf.OmegaConf.merge(cfg.method_kwargs, spec.as_method_kwargs())
        return cfg

    def __init__(self, cfg: omegaconf.DictConfig) -> None:
        super().__init__(cfg)  # type: ignore[call-arg]
        self.mixmask_symmetric = _is_symmetric(type(self), cfg)
        # solo-learn's BaseMethod ran add_and_assert_specific_cfg (the parse) just now
        self.mixmask_spec = BranchConfig.from_method_kwargs(cfg.method_kwargs)
        self.branches = Branches(self.mixmask_spec, *normalisation(cfg),
                                 seed=int(omegaconf_select(cfg, "seed",
                                                           field_default(LightningKeys, "seed"))))
        if self.num_large_crops != 2:
            raise ConfigError("the MixMask variants need exactly two large crops (augmentations "
                              f"give {self.num_large_crops})")

    def _rank(self) -> int:
        return int(getattr(self, "global_rank", 0) or 0)

    def setup(self, stage: str) -> None:
        """Gives every process its own mask stream, as this package's engine does (``fork``)."""
        super().setup(stage)  # type: ignore[misc]
        self.branches.fork(self._rank())

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.no_channel_last else x.to(memory_format=torch.channels_last)

    def mixmask_loss(self, crops: list[torch.Tensor], embed: Callable[[torch.Tensor], torch.Tensor],
                     loss_against: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """The branches' loss (``Branches.run``: the per-crop loop, ``targets: both``, the log
        keys); ``loss_against(emb, crop)`` scores row i of ``emb`` against target i of the crop
        other than ``crop``, per sample."""
        loss, logs = self.branches.run(crops, embed, loss_against)
        self.log_dict(logs, on_epoch=True, sync_dist=True)  # type: ignore[attr-defined]
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["mixmask_branches"] = self.branches.state_dict()
        # solo-learn's fixed-lr groups (SimSiam's predictor) replace the scheduler's get_lr with a
        # functools.partial that drags a pickled copy of the scheduler and optimizer into the state:
        # such a file cannot be read with torch.load(weights_only=True) (main_linear.py on
        # torch >= 2.6, this package's tools), and restoring it would bind get_lr to that stale copy.
        # configure_optimizers sets the hook again on resume, so the state is complete without it.
        for state in checkpoint.get("lr_schedulers", []):
            for key in [k for k, v in state.items() if callable(v)]:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        if "mixmask_branches" in checkpoint:
            self.branches.load_state_dict(checkpoint["mixmask_branches"])
            self.branches.fork(self._rank())


class _ReadsSoloStep(SoloMixMaskMixin):
    """Runs solo-learn's own ``training_step`` and keeps the per-crop outputs it computed."""

    _crop_outs: Optional[list[dict[str, Any]]] = None
    _crop_momentum: Optional[list[dict[str, Any]]] = None

    def base_training_step(self, X: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        out = super().base_training_step(X, targets)  # type: ignore[misc]
        if self._crop_outs is not None:
            self._crop_outs.append(out)
        return out

    @torch.no_grad()
    def momentum_forward(self, X: torch.Tensor) -> dict[str, Any]:
        out = super().momentum_forward(X)  # type: ignore[misc]
        if self._crop_momentum is not None:
            self._crop_momentum.append(out)
        return out

    def training_step(self, batch: list[Any], batch_idx: int) -> torch.Tensor:
        self._crop_outs, self._crop_momentum = [], []
        try:
            loss = super().training_step(batch, batch_idx)  # type: ignore[misc]
            outs, momentum = self._crop_outs, self._crop_momentum
        finally:
            self._crop_outs = self._crop_momentum = None
        crops = _large_crops(batch, self.num_large_crops)
        extra = self.mixmask_loss(crops, self.mix_embed,
                                  lambda emb, c: self.mix_loss(emb, outs, momentum, c))
        return loss + extra

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mix_loss(self, emb: torch.Tensor, outs: list[dict[str, Any]],
                 momentum: list[dict[str, Any]], crop: int) -> torch.Tensor:
        raise NotImplementedError


def _large_crops(batch: list[Any], n: int) -> list[torch.Tensor]:
    X = batch[1]
    X = [X] if isinstance(X, torch.Tensor) else list(X)
    return X[:n]


class MixMaskBYOL(_ReadsSoloStep, BYOL):
    """solo-learn's BYOL plus the MixMask branches: the mixture's prediction regresses the
    momentum projection of the other crop."""

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(self._images(x))))

    def mix_loss(self, emb, outs, momentum, crop):
        return byol_loss_func(emb, momentum[1 - crop]["z"], reduction="none")


class MixMaskSimSiam(_ReadsSoloStep, SimSiam):
    """solo-learn's SimSiam plus the MixMask branches: the mixture's prediction matches the
    stop-gradient projection of the other crop."""

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(self._images(x))))

    def mix_loss(self, emb, outs, momentum, crop):
        return simsiam_loss_func(emb, outs[1 - crop]["z"].detach(), reduction="none")


class MixMaskSimCLR(_ReadsSoloStep, SimCLR):
    """solo-learn's SimCLR plus the MixMask branches: InfoNCE of the mixture's projection against
    the other crop's projections of the whole (gathered) batch, positive at the same index."""

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(self._images(x)))

    def mix_loss(self, emb, outs, momentum, crop):
        return mixture_nce(emb, gather(outs[1 - crop]["z"]), get_rank() * len(emb),
                           self.temperature)


class MixMaskMoCoV2Plus(SoloMixMaskMixin, MoCoV2Plus):
    """solo-learn's MoCoV2Plus plus the MixMask branches, with one queue snapshot per step."""

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(self._images(x))), dim=-1)

    def training_step(self, batch: list[Any], batch_idx: int) -> torch.Tensor:
        # solo-learn's MoCoV2Plus.training_step would enqueue before the mixed terms: skip it and
        # run the shared part (forwards, online classifier, momentum forwards) of BaseMomentumMethod
        out = super(MoCoV2Plus, self).training_step(batch, batch_idx)
        q1, q2 = out["z"][:2]
        k1, k2 = out["momentum_z"][:2]
        queue = self.queue.clone().detach()  # queue[i] holds past keys of crop i
        if self.mixmask_symmetric:
            nce = (solo_mocov2plus_loss(q1, k2, queue[1], self.temperature)
                   + solo_mocov2plus_loss(q2, k1, queue[0], self.temperature)) / 2
        else:
            nce = solo_mocov2plus_loss(q1, k2, queue[1], self.temperature)
        keys = (k1, k2)

        def against(emb: torch.Tensor, crop: int) -> torch.Tensor:
            other = 1 - crop
            return mocov2plus_loss_func(emb, keys[other], queue[other], self.temperature,
                                        reduction="none")

        extra = self.mixmask_loss(_large_crops(batch, self.num_large_crops), self.mix_embed,
                                  against)
        self._dequeue_and_enqueue(torch.stack((gather(k1), gather(k2))))
        self.log("train_nce_loss", nce, on_epoch=True, sync_dist=True)
        return nce + extra + out["loss"]


VARIANTS: dict[str, type[BaseMethod]] = {
    "mixmask_mocov2plus": MixMaskMoCoV2Plus,
    "mixmask_byol": MixMaskBYOL,
    "mixmask_simclr": MixMaskSimCLR,
    "mixmask_simsiam": MixMaskSimSiam,
}
