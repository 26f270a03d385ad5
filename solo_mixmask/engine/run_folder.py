"""One run-folder policy for pretraining, the linear probe and semi-supervised training.

A run's folder is created, with the run's ``args.json``, when the run starts; if the run fails
before its first optimizer step, the folders it created are removed again, so bad input or an early
crash leaves nothing behind, while a run that trained keeps its checkpoints and logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .checkpoint import write_json_atomic


class RunFolder:
    """``with RunFolder(path, cfg, ...) as folder:`` around everything a run does after its input
    was checked. ``primary``: this process writes (rank 0); ``steps()``: optimizer steps taken so
    far (set it once the trainer exists); ``keep_on``: exceptions that keep the folder whatever the
    step count (an interrupted run keeps its state)."""

    def __init__(self, path: Path, cfg: DictConfig, *, primary: bool = True, what: str = "",
                 keep_on: tuple[type[BaseException], ...] = ()) -> None:
        self.path = Path(path)
        self.cfg = cfg
        self.primary = primary
        self.what = what or str(self.path)
        self.keep_on = keep_on
        self.steps: Callable[[], int] = lambda: 0
        # the topmost folder this run creates (None: the run's folder exists already)
        self.created: Optional[Path] = next(
            (p for p in reversed(self.path.parents) if not p.exists()), None) or (
            self.path if not self.path.exists() else None)

    def __enter__(self) -> RunFolder:
        if self.primary:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{self.what}: cannot create {self.path} "
                                  f"({exc.strerror or exc})") from None
            args = self.path / "args.json"
            if not args.exists():
                write_json_atomic(args, OmegaConf.to_container(self.cfg, resolve=True))
        return self

    def discard_if_untrained(self) -> bool:
        """Removes what this run created if it took no step; True when it did (once)."""
        if self.created is None or not self.primary or self.steps() > 0:
            return False
        shutil.rmtree(self.created, ignore_errors=True)
        self.created = None
        return True

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Any:
        if exc_type is not None and not issubclass(exc_type, self.keep_on):
            self.discard_if_untrained()
        return False
