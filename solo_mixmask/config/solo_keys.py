"""solo-learn's keys that this engine accepts but does not use (a notice each), and those whose
non-default value would change results (an error)."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

# ------------------------------------------------------------------- solo-learn keys not used here
#: key -> (value that changes nothing, what to say)
SOLO_LEARN_IGNORED: dict[str, tuple[Any, str]] = {
    "auto_umap.enabled": (False, "UMAP plots are not produced by this engine"),
    "debug_augmentations": (False, "augmentation previews are not produced by this engine"),
    "dali.encode_indexes_into_labels": (False, "indexes always travel with DALI batches here"),
    "momentum.classifier": (False, "the momentum classifier is not implemented here"),
    "wandb_run_id": (None, "runs are resumed by checkpoint, not by W&B run id"),
}

#: solo-learn keys whose non-default value would change results: an error, not a notice
SOLO_LEARN_UNSUPPORTED: dict[str, Any] = {
    "auto_augment": False, "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
    "data.fraction": -1.0,
}


def report_ignored(cfg: DictConfig, given: DictConfig) -> None:
    """One notice line per solo-learn key that the config sets and this engine does not use."""
    for key, (neutral, why) in SOLO_LEARN_IGNORED.items():
        if OmegaConf.select(given, key, default=None) is None:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != neutral:
            print(f"notice: {key}={value} is ignored ({why})", file=sys.stderr)
    for key, neutral in SOLO_LEARN_UNSUPPORTED.items():
        value = OmegaConf.select(cfg, key, default=neutral, throw_on_missing=False)
        if value is not None and value != neutral:
            hint = ("train on a labelled fraction with `solo-mixmask semi` (semi.fraction)"
                    if key == "data.fraction" and "semi" not in cfg else "remove the key")
            raise ConfigError(f"{key}={value}: solo-learn's option is not supported by this "
                              f"engine; {hint}")
