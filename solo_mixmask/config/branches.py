"""The MixMask family's settings: the ``method_kwargs.mixmask`` / ``method_kwargs.unmix`` schema
and its resolution into one frozen :class:`BranchConfig` (``auto`` values decided, the checks that
depend on the crop size and on the base method's loss made). The branch runner,
``solo_mixmask.mixmask.Branches``, takes the resolved object and holds no defaults of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from omegaconf import ListConfig

from ..errors import ConfigError
from .validation import check_auto_or_int, check_ratio, opt, sub, validate

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
    """The resolved branches (``parse_branch_cfg``): every field given, no defaults here, so the
    schema below is the only place a default lives."""

    mixmask: bool
    fill: str
    pattern: str
    grid: int
    ratio: Union[float, tuple[float, float]]
    permutation: str  # "reverse" or "random"
    per_sample: bool
    crops: str
    targets: str
    unmix: bool
    unmix_prob: float
    unmix_alpha: float
    unmix_targets: str

    @property
    def erase(self) -> bool:
        return self.mixmask and self.fill != "mix"

    @classmethod
    def from_method_kwargs(cls, kw: Any) -> BranchConfig:
        """The inverse of ``as_method_kwargs``: the object of a ``method_kwargs`` that
        ``parse_branch_cfg`` resolved already (a parsed config, a checkpoint's), without parsing
        it again."""
        mm, um = kw["mixmask"], kw["unmix"]
        ratio = mm["ratio"]
        return cls(mixmask=bool(mm["enabled"]), fill=str(mm["fill"]), pattern=str(mm["pattern"]),
                   grid=int(mm["grid"]),
                   ratio=(float(ratio[0]), float(ratio[1])) if isinstance(ratio, (list, ListConfig))
                   else float(ratio),
                   permutation=str(mm["permutation"]), per_sample=bool(mm["per_sample"]),
                   crops=str(mm["crops"]), targets=str(mm["targets"]), unmix=bool(um["enabled"]),
                   unmix_prob=float(um["prob"]), unmix_alpha=float(um["alpha"]),
                   unmix_targets=str(um["targets"]))

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
