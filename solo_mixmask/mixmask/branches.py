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

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from ..errors import ConfigError
from .masks import sample_masks
from .mixing import erase, erase_fill, mix, permutation, unmix
from .objective import erase_loss, two_term_loss

PATTERNS = ("blocked", "discrete")
FILLS = ("mix", "zero", "noise", "mean")
PERMUTATIONS = {"auto": "auto", "reverse": "reverse", "random": "random",
                "same": "reverse", "different": "random"}
CROPS = ("first", "both")


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
    unmix: bool = False
    unmix_prob: float = 0.5
    unmix_alpha: float = 1.0

    @property
    def erase(self) -> bool:
        return self.mixmask and self.fill != "mix"

    def as_method_kwargs(self) -> dict[str, Any]:
        """The resolved settings in the ``method_kwargs`` layout (for args.json and records)."""
        ratio = list(self.ratio) if isinstance(self.ratio, tuple) else self.ratio
        return {
            "mixmask": {"enabled": self.mixmask, "fill": self.fill, "pattern": self.pattern,
                        "grid": self.grid, "ratio": ratio, "permutation": self.permutation,
                        "per_sample": self.per_sample, "crops": self.crops},
            "unmix": {"enabled": self.unmix, "prob": self.unmix_prob, "alpha": self.unmix_alpha},
        }


def default_grid(crop_size: int) -> int:
    """The paper's grid sizes (Table 1): 2 at 32 px, 4 at 64 px, 8 at 224 px."""
    return 2 if crop_size <= 32 else 4 if crop_size <= 64 else 8


def _get(node: Any, key: str, default: Any) -> Any:
    if node is None:
        return default
    value = node.get(key, None) if hasattr(node, "get") else None
    return default if value is None else value


def parse_branch_cfg(kw: DictConfig, crop_size: int, symmetric: bool,
                     mixmask_default: bool = True) -> BranchConfig:
    """Validates ``method_kwargs.mixmask`` / ``method_kwargs.unmix``; a clear error per bad key."""
    mm = kw.get("mixmask", None) if kw is not None else None
    um = kw.get("unmix", None) if kw is not None else None
    where = "method_kwargs.mixmask"
    enabled = bool(_get(mm, "enabled", mixmask_default))
    pattern = str(_get(mm, "pattern", "blocked"))
    if pattern not in PATTERNS:
        raise ConfigError(f"{where}.pattern={pattern!r}: choose one of {list(PATTERNS)}")
    fill = str(_get(mm, "fill", "mix"))
    if fill not in FILLS:
        raise ConfigError(f"{where}.fill={fill!r}: choose one of {list(FILLS)}")
    grid_raw = _get(mm, "grid", "auto")
    grid = default_grid(crop_size) if grid_raw == "auto" else grid_raw
    if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= crop_size:
        raise ConfigError(f"{where}.grid={grid_raw!r} must be an integer from 2 to the crop size "
                          f"({crop_size})")
    ratio_raw = _get(mm, "ratio", 0.5)
    if isinstance(ratio_raw, (list, tuple, ListConfig)):
        if len(ratio_raw) != 2:
            raise ConfigError(f"{where}.ratio must be a number or a pair [low, high]")
        lo, hi = float(ratio_raw[0]), float(ratio_raw[1])
        if lo > hi:
            raise ConfigError(f"{where}.ratio=[{lo}, {hi}]: the uniform bounds are reversed")
        if not (lo > 0 and hi < 1):
            raise ConfigError(f"{where}.ratio=[{lo}, {hi}] must lie inside (0, 1)")
        ratio: Union[float, tuple[float, float]] = (lo, hi)
    else:
        try:
            ratio = float(ratio_raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.ratio={ratio_raw!r} is not a number") from None
        if not 0 < ratio < 1:
            raise ConfigError(f"{where}.ratio={ratio} must lie inside (0, 1)")
    perm_raw = str(_get(mm, "permutation", "auto"))
    if perm_raw not in PERMUTATIONS:
        raise ConfigError(f"{where}.permutation={perm_raw!r}: choose one of "
                          f"{list(PERMUTATIONS)}")
    crops = str(_get(mm, "crops", "first"))
    if crops not in CROPS:
        raise ConfigError(f"{where}.crops={crops!r}: choose one of {list(CROPS)}")
    if crops == "both" and not symmetric:
        raise ConfigError(f"{where}.crops='both' needs a symmetric base loss (crop 2 is never a "
                          "query here)")
    un_enabled = bool(_get(um, "enabled", False))
    prob = float(_get(um, "prob", 0.5))
    if not 0 <= prob <= 1:
        raise ConfigError(f"method_kwargs.unmix.prob={prob} must lie in [0, 1]")
    alpha = float(_get(um, "alpha", 1.0))
    if alpha <= 0:
        raise ConfigError(f"method_kwargs.unmix.alpha={alpha} must be positive")
    if not enabled and not un_enabled:
        raise ConfigError("enable method_kwargs.mixmask or method_kwargs.unmix (or use the base "
                          "method for the vanilla baseline)")
    perm = PERMUTATIONS[perm_raw]
    if perm == "auto":
        perm = "random" if un_enabled else "reverse"
    return BranchConfig(mixmask=enabled, fill=fill, pattern=pattern, grid=int(grid), ratio=ratio,
                        permutation=perm, per_sample=bool(_get(mm, "per_sample", False)),
                        crops=crops, unmix=un_enabled, unmix_prob=prob, unmix_alpha=alpha)


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

    def crops_to_mix(self) -> list[int]:
        return [0, 1] if self.cfg.crops == "both" else [0]

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._noise_gen is None or self._noise_gen.device != device:
            self._noise_gen = torch.Generator(device=device)
            self._noise_gen.manual_seed(self._noise_seed)
        return self._noise_gen

    def __call__(self, x: torch.Tensor, embed: Embed,
                 per_sample_loss: PerSampleLoss) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.cfg
        n = len(x)
        total: Optional[torch.Tensor] = None
        logs: dict[str, Any] = {}
        if c.unmix:
            mixed, lam, _ = unmix(x, c.unmix_prob, c.unmix_alpha, self.rng)
            perm = permutation(n, "reverse", self.rng, x.device)
            loss, terms = two_term_loss(per_sample_loss, embed(mixed), lam, perm)
            total = loss
            logs.update({"unmix_loss": loss.detach(), "unmix_lambda": lam,
                         "unmix_main": terms["main"], "unmix_fill": terms["fill"]})
        if c.mixmask:
            mask, lam = sample_masks(c.pattern, c.grid, c.ratio, tuple(x.shape[-2:]), n,
                                     c.per_sample, self.rng, x.device)
            if c.erase:
                fill = erase_fill(x, c.fill, self.mean, self.std,
                                  self._noise_generator(x.device) if c.fill == "noise" else None)
                kept, complement = erase(x, mask, fill)
                loss, terms = erase_loss(per_sample_loss, embed(kept), embed(complement), lam)
                name = "erase"
            else:
                perm = permutation(n, c.permutation, self.rng, x.device)
                loss, terms = two_term_loss(per_sample_loss, embed(mix(x, mask, perm)), lam, perm)
                name = "mixmask"
            total = loss if total is None else total + loss
            logs.update({f"{name}_loss": loss.detach(), f"{name}_lambda": lam.mean().detach(),
                         f"{name}_main": terms["main"], f"{name}_fill": terms["fill"]})
        assert total is not None
        return total, logs

    # the generator travels with checkpoints so a resumed run draws the same masks
    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]

    def fork(self, rank: int) -> None:
        """Gives process ``rank`` its own stream, derived from the current state (rank 0 keeps
        it): under DDP each rank draws its own masks and permutations, also after a resume from a
        checkpoint that holds rank 0's state."""
        if rank > 0:
            self.rng = np.random.default_rng([int(self.rng.integers(2**62)), rank])
            self._noise_seed = self._noise_seed * 1000 + rank
            self._noise_gen = None
