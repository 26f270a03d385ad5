"""The Hydra callback that makes solo-learn's ``main_pretrain.py`` know the MixMask variants.

``main_pretrain.py`` looks methods up in ``solo.methods.METHODS``, a dict it imported at start-up;
the callback fills that same dict before the task function runs:

    python main_pretrain.py --config-path ... --config-name ... \\
        +hydra.callbacks.mixmask._target_=solo_mixmask.solo.MixMaskCallback
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from .compat import adapt_cfg
from .registry import register

log = logging.getLogger(__name__)


class MixMaskCallback(Callback):
    """Registers the variants on every job start; adapts the config's vocabulary in RUN mode.

    ``adapt`` (default on) translates the few names that this package's config files use and
    solo-learn does not know (see ``solo_mixmask.solo.compat``). Hydra hands the task a copy of the
    config taken before ``on_job_start``, so that translation happens in ``on_run_start``, which
    only single runs have; a multirun needs the equivalent overrides on the command line.
    """

    def __init__(self, adapt: bool = True) -> None:
        self.adapt = adapt

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.adapt:
            return
        with read_write(config), open_dict(config):
            for note in adapt_cfg(config):
                # printed: the configs here switch Hydra's logging off
                print(f"solo-mixmask: {note}", file=sys.stderr)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        names = sorted(register())
        log.info("solo-mixmask: registered %s in solo.methods.METHODS", ", ".join(names))
