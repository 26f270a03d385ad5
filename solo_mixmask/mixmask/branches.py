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
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..config.branches import BranchConfig
from ..errors import ConfigError
from .masks import sample_masks
from .mixing import erase, erase_fill, mix, permutation, unmix
from .objective import erase_loss, two_term_loss

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

    def run(self, crops: list[torch.Tensor], embed: Embed,
            against: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor,
                                                                             dict[str, Any]]:
        """The branch loss of a step for every adapter: each crop to mix (``crops: first`` or
        ``both``) goes through ``__call__``, the losses are averaged over those crops, and the
        logs are named ``train_<term>`` (``train_<term>_crop<c>`` when both crops are mixed).

        ``against(emb, c)`` scores row i of ``emb`` against target i of the crop other than
        ``c``, per sample; the same function with ``c`` swapped gives the mixed crop's own
        targets (``targets: both``).
        """
        total: Optional[torch.Tensor] = None
        logs: dict[str, Any] = {}
        mixed = self.crops_to_mix()
        for c in mixed:
            loss, branch_logs = self(crops[c], embed, lambda emb, c=c: against(emb, c),
                                     lambda emb, c=c: against(emb, 1 - c))
            total = loss if total is None else total + loss
            for key, value in branch_logs.items():
                logs[f"train_{key}" if len(mixed) == 1 else f"train_{key}_crop{c + 1}"] = value
        assert total is not None
        return total / len(mixed), logs

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
