"""Errors that the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class SoloMixMaskError(Exception):
    """Base class: bad input that the user can fix (config, data, checkpoint, download)."""


class ConfigError(SoloMixMaskError):
    """An invalid or incomplete configuration."""


class DataError(SoloMixMaskError):
    """Missing, empty or unreadable data."""


class CheckpointError(SoloMixMaskError):
    """A checkpoint that cannot be used as asked."""


class DownloadError(SoloMixMaskError):
    """A failed or unverifiable download."""


class Interrupted(Exception):
    """Training stopped by Ctrl-C. ``checkpoint``: the state to resume from (None: none yet);
    ``saved_now``: it holds the interrupted state (else the work since it is lost)."""

    def __init__(self, checkpoint: Optional[Path], epoch: int, step: int,
                 saved_now: bool) -> None:
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step
        self.saved_now = saved_now

    def advice(self) -> str:
        """The one line the CLI prints."""
        if self.checkpoint is None:
            return f"{self}: no checkpoint was written yet; nothing to resume from"
        what = "saved" if self.saved_now else "stopped at once; last checkpoint"
        return (f"{self}: {what} {self.checkpoint}; resume with the same command plus "
                f"resume_from_checkpoint={self.checkpoint}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when the message is empty), cut at
    ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


def one_line(exc: BaseException) -> str:
    """The last meaningful line of an error message.

    Errors raised inside DataLoader workers come back wrapped with the worker's traceback; the
    original message is the last line.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    for cls in (ConfigError, DataError, CheckpointError, DownloadError, SoloMixMaskError):
        prefix = f"{cls.__module__}.{cls.__name__}: "
        if last.startswith(prefix):
            return last[len(prefix):]
        if last.startswith(cls.__name__ + ": "):
            return last[len(cls.__name__) + 2:]
    return last
