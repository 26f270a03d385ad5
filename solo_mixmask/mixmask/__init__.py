"""MixMask core: grid masks, mixing, the two-term objective and the branch runner.

Every method variant, in this package's engine and inside solo-learn, calls ``Branches.run``; the
settings it runs are resolved in ``solo_mixmask.config.branches``.
"""

from ..config.branches import BranchConfig, default_grid, parse_branch_cfg
from .branches import Branches
from .masks import blocked_grid, discrete_grid, sample_grids, sample_masks, upsample
from .mixing import erase, erase_fill, inverse, mix, permutation, unmix
from .objective import erase_loss, two_term_loss

__all__ = [
    "BranchConfig", "Branches", "blocked_grid", "default_grid", "discrete_grid", "erase",
    "erase_fill", "erase_loss", "inverse", "mix", "parse_branch_cfg", "permutation",
    "sample_grids", "sample_masks", "two_term_loss", "unmix", "upsample",
]
