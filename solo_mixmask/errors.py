"""Errors that the CLI reports as one clear line instead of a traceback."""


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
