"""The MixMask family as one object every method variant calls.

``Branches(cfg)(x, embed, per_sample_loss)`` returns the extra loss of the enabled branches for one
query crop ``x``:

- ``mixmask`` with ``fill: mix``: filling-based masking with the two-term objective;
- ``mixmask`` with an erase fill (``zero``/``noise``/``mean``): the erase-based (MSCN-style) baseline;
- ``unmix``: Un-Mix's global mixup / CutMix branch with the reversed batch.

``embed`` maps images to query embeddings; ``per_sample_loss`` scores row i of such embeddings
against target i of the other crop. MixMask* is ``unmix`` + ``mixmask``. All randomness (masks,
ratios, permutations, Beta draws) comes from the branches' own generator, so turning a branch on
does not change the data augmentation stream, and the generator state is checkpointed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from omegaconf import ListConfig

from ..config.schema import check_auto_or_int, check_ratio, opt, sub, validate
from ..errors import ConfigError
from .masks import sample_masks
from .mixing import erase, erase_fill, mix, permutation, unmix
from .objective import erase_loss, two_term_loss

PATTERNS = ("blocked", "discrete")
FILLS = ("mix", "zero", "noise", "mean")
PERMUTATIONS = {"auto": "auto", "reverse": "reverse", "random": "random",
                "same": "reverse", "different": "random"}
CROPS = ("first", "both")
#: what a mixed crop's embeddings are scored against: the targets of the other crop (the paper's
#: Eq. 4-6), or of both crops (Un-Mix's CIFAR code: the query of the mixture made from crop 1 is
#: scored against the keys of crop 2 and of crop 1, each pair weighted lambda / 1 - lambda)
TARGETS = ("other", "both")


@dataclass(frozen=True)
class BranchConfig:
    mixmask: bool = True
    fill: str = "mix"
    pattern: str = "blocked"
    grid: int = 2
    ratio: Union[float, tuple[float, float]] = 0.5
    permutation: str = "reverse"
    per_sample: bool = False
    crops: str = "first"
    targets: str = "other"
    unmix: bool = False
    unmix_prob: float = 0.5
    unmix_alpha: float = 1.0
    unmix_targets: str = "other"

    @property
    def erase(self) -> bool:
        return self.mixmask and self.fill != "mix"

    def as_method_kwargs(self) -> dict[str, Any]:
        """The resolved settings in the ``method_kwargs`` layout (for args.json and records)."""
        ratio = list(self.ratio) if isinstance(self.ratio, tuple) else self.ratio
        return {
            "mixmask": {"enabled": self.mixmask, "fill": self.fill, "pattern": self.pattern,
                        "grid": self.grid, "ratio": ratio, "permutation": self.permutation,
                        "per_sample": self.per_sample, "crops": self.crops,
                        "targets": self.targets},
            "unmix": {"enabled": self.unmix, "prob": self.unmix_prob, "alpha": self.unmix_alpha,
                      "targets": self.unmix_targets},
        }


def default_grid(crop_size: int) -> int:
    """The paper's grid sizes (Table 1): 2 at 32 px, 4 at 64 px, 8 at 224 px."""
    return 2 if crop_size <= 32 else 4 if crop_size <= 64 else 8


@dataclass
class MixMaskKwargs:
    """``method_kwargs.mixmask``: the MixMask (or erase-based) branch."""

    enabled: bool = True
    fill: str = opt("mix", choices=FILLS)
    pattern: str = opt("blocked", choices=PATTERNS)
    grid: Any = opt("auto", check=check_auto_or_int(2))
    ratio: Any = opt(0.5, check=check_ratio)
    permutation: str = opt("auto", choices=tuple(PERMUTATIONS))
    per_sample: bool = False
    crops: str = opt("first", choices=CROPS)
    targets: str = opt("other", choices=TARGETS)


@dataclass
class UnmixKwargs:
    """``method_kwargs.unmix``: Un-Mix's global mixup / CutMix branch."""

    enabled: bool = False
    prob: float = opt(0.5, ge=0, le=1)
    alpha: float = opt(1.0, gt=0)
    targets: str = opt("other", choices=TARGETS)


@dataclass
class BranchKwargs:
    mixmask: MixMaskKwargs = sub(MixMaskKwargs)
    unmix: UnmixKwargs = sub(UnmixKwargs)


def parse_branch_cfg(kw: Any, crop_size: int, symmetric: bool) -> BranchConfig:
    """Validates ``method_kwargs.mixmask`` / ``method_kwargs.unmix`` against their schema, then
    resolves ``auto`` values and checks what depends on the crop and the base method."""
    given = {k: kw[k] for k in ("mixmask", "unmix") if kw is not None and kw.get(k) is not None}
    spec = validate(given, BranchKwargs, "method_kwargs")
    mm, um = spec.mixmask, spec.unmix
    where = "method_kwargs.mixmask"
    grid = default_grid(crop_size) if mm.grid == "auto" else int(mm.grid)
    if grid > crop_size:
        raise ConfigError(f"{where}.grid={mm.grid!r} must be an integer from 2 to the crop size "
                          f"({crop_size})")
    ratio_raw = mm.ratio
    ratio: Union[float, tuple[float, float]] = (
        (float(ratio_raw[0]), float(ratio_raw[1])) if isinstance(ratio_raw, (list, ListConfig))
        else float(ratio_raw))
    if mm.crops == "both" and not symmetric:
        raise ConfigError(f"{where}.crops='both' needs a symmetric base loss (crop 2 is never a "
                          "query here)")
    for key, branch in (("mixmask", mm), ("unmix", um)):
        if branch.enabled and branch.targets == "both" and not symmetric:
            raise ConfigError(f"method_kwargs.{key}.targets='both' needs a symmetric base loss "
                              "(the asymmetric loss has no target for the crop the mixture is "
                              "made from); set method_kwargs.symmetric=true or targets: other")
    if not mm.enabled and not um.enabled:
        raise ConfigError("enable method_kwargs.mixmask or method_kwargs.unmix (or use the base "
                          "method for the vanilla baseline)")
    perm = PERMUTATIONS[mm.permutation]
    if perm == "auto":
        perm = "random" if um.enabled else "reverse"
    return BranchConfig(mixmask=bool(mm.enabled), fill=str(mm.fill), pattern=str(mm.pattern),
                        grid=grid, ratio=ratio, permutation=perm, per_sample=bool(mm.per_sample),
                        crops=str(mm.crops), targets=str(mm.targets), unmix=bool(um.enabled),
                        unmix_prob=float(um.prob), unmix_alpha=float(um.alpha),
                        unmix_targets=str(um.targets))


Embed = Callable[[torch.Tensor], torch.Tensor]
PerSampleLoss = Callable[[torch.Tensor], torch.Tensor]


class Branches:
    """Runs the enabled branches for a query crop; see the module docstring."""

    def __init__(self, cfg: BranchConfig, mean: tuple[float, ...] = (0.0, 0.0, 0.0),
                 std: tuple[float, ...] = (1.0, 1.0, 1.0), seed: int = 0) -> None:
        self.cfg = cfg
        self.mean, self.std = tuple(mean), tuple(std)
        self.rng = np.random.default_rng(seed)
        self._noise_seed = seed
        self._noise_gen: Optional[torch.Generator] = None
        self._noise_state: Optional[torch.Tensor] = None

    def crops_to_mix(self) -> list[int]:
        return [0, 1] if self.cfg.crops == "both" else [0]

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._noise_gen is None or self._noise_gen.device != device:
            self._noise_gen = torch.Generator(device=device)
            self._noise_gen.manual_seed(self._noise_seed)
            if self._noise_state is not None:  # restored from a checkpoint
                with contextlib.suppress(RuntimeError):  # a state of another device type
                    self._noise_gen.set_state(self._noise_state.to(torch.uint8).cpu())
                self._noise_state = None
        return self._noise_gen

    @staticmethod
    def _scorer(targets: str, other: PerSampleLoss,
                same: Optional[PerSampleLoss]) -> PerSampleLoss:
        """The per-sample loss of a branch: against the other crop's targets, or the sum over
        both crops' targets (the objective is linear in it, so each pair keeps lambda / 1 - lambda)."""
        if targets == "other":
            return other
        if same is None:
            raise ConfigError("targets='both' needs the targets of the mixed crop itself")
        return lambda emb: other(emb) + same(emb)

    def __call__(self, x: torch.Tensor, embed: Embed, per_sample_loss: PerSampleLoss,
                 same_loss: Optional[PerSampleLoss] = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """``per_sample_loss`` scores against the other crop's targets, ``same_loss`` against the
        targets of the crop ``x`` itself (needed by ``targets: both``)."""
        c = self.cfg
        n = len(x)
        total: Optional[torch.Tensor] = None
        logs: dict[str, Any] = {}
        if c.unmix:
            mixed, lam, _ = unmix(x, c.unmix_prob, c.unmix_alpha, self.rng)
            perm = permutation(n, "reverse", self.rng, x.device)
            score = self._scorer(c.unmix_targets, per_sample_loss, same_loss)
            loss, terms = two_term_loss(score, embed(mixed), lam, perm)
            total = loss
            # logged as a device tensor: Lightning would copy a Python float to the device
            lam_log = torch.full((), lam, dtype=torch.get_default_dtype(), device=x.device)
            logs.update({"unmix_loss": loss.detach(), "unmix_lambda": lam_log,
                         "unmix_main": terms["main"], "unmix_fill": terms["fill"]})
        if c.mixmask:
            mask, lam = sample_masks(c.pattern, c.grid, c.ratio, tuple(x.shape[-2:]), n,
                                     c.per_sample, self.rng, x.device)
            score = self._scorer(c.targets, per_sample_loss, same_loss)
            if c.erase:
                fill = erase_fill(x, c.fill, self.mean, self.std,
                                  self._noise_generator(x.device) if c.fill == "noise" else None)
                kept, complement = erase(x, mask, fill)
                loss, terms = erase_loss(score, embed(kept), embed(complement), lam)
                name = "erase"
            else:
                perm = permutation(n, c.permutation, self.rng, x.device)
                loss, terms = two_term_loss(score, embed(mix(x, mask, perm)), lam, perm)
                name = "mixmask"
            total = loss if total is None else total + loss
            logs.update({f"{name}_loss": loss.detach(), f"{name}_lambda": lam.mean().detach(),
                         f"{name}_main": terms["main"], f"{name}_fill": terms["fill"]})
        assert total is not None
        return total, logs

    # the generator travels with checkpoints so a resumed run draws the same masks
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": self.rng.bit_generator.state}
        if self._noise_gen is not None:
            state["noise"] = self._noise_gen.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
        if "noise" in state:
            self._noise_state = state["noise"]
            self._noise_gen = None

    def fork(self, rank: int) -> None:
        """Gives process ``rank`` its own stream, derived from the current state (rank 0 keeps
        it): under DDP each rank draws its own masks and permutations, also after a resume from a
        checkpoint that holds rank 0's state."""
        if rank > 0:
            self.rng = np.random.default_rng([int(self.rng.integers(2**62)), rank])
            self._noise_seed = self._noise_seed * 1000 + rank
            self._noise_gen = None
