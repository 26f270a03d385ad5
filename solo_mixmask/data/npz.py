"""Packed JPEG datasets (``.npz`` of encoded bytes + offsets + labels) -> ImageFolder trees.

The test and benchmark data ship this way; pipelines that read files need them unpacked once into a
cache directory. Unpacking writes the original bytes (no re-encoding) and is atomic: a half-written
tree is never mistaken for a complete one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError


def shared_data_dir() -> Optional[Path]:
    """``$SOLO_MIXMASK_DATA`` or the nearest ``../shared/data`` above the working directory."""
    env = os.environ.get("SOLO_MIXMASK_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    here = Path.cwd().resolve()
    for parent in [here, *here.parents]:
        cand = parent.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read packed dataset {path}: {exc}") from None


def select_per_class(labels: np.ndarray, per_class: Optional[int]) -> np.ndarray:
    """The first ``per_class`` indices of every class, in file order (all when None)."""
    if per_class is None:
        return np.arange(len(labels))
    keep = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def unpack_npz(npz_path: str | os.PathLike, out_dir: str | os.PathLike,
               per_class: Optional[int] = None) -> Path:
    """Writes ``out_dir/<class>/<file>.jpg`` for the selected images; returns ``out_dir``.

    A complete tree (marked by ``.complete``) is reused as it is.
    """
    out = Path(out_dir)
    marker = out / ".complete"
    if marker.is_file():
        return out
    z = load_npz(npz_path)
    jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"].astype(np.int64)
    names = [str(n) for n in z["class_names"]]
    paths = z.get("paths")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for name in names:
            (tmp / name).mkdir()
        for i in select_per_class(labels, per_class):
            base = os.path.basename(str(paths[i])) if paths is not None else f"{i:07d}.jpg"
            target = tmp / names[labels[i]] / base
            target.write_bytes(jpeg[offsets[i]:offsets[i + 1]].tobytes())
        (tmp / ".complete").write_text("ok\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
