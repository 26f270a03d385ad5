"""Result records: one small JSON file per evaluation, so results from many machines can be
collected in a folder (e.g. ``docs/results/``) and tabulated by ``solo-mixmask report``.

A record is a flat JSON object::

    {
      "schema": "solo-mixmask/result/1",
      "eval": "knn" | "linear" | "semi",
      "method": "mocov2plus",          # base method, without the "mixmask_" prefix
      "variant": "mixmask",            # vanilla | unmix | mixmask | mixmask_star | erase | unknown
      "dataset": "cifar100",           # the dataset evaluated on
      "backbone": "resnet18",
      "epochs": 1000,                  # pretraining epochs (null when unknown)
      "metrics": {"acc1": 63.1, "acc5": 88.0},
      "settings": {...},               # what else defines the number (k, T, fraction, lr, ...)
      "checkpoint": "path/to/file.ckpt",
      "checkpoint_sha256": "...",
      "checkpoint_format": "solo_mixmask" | "solo-learn" | "official" | "torchvision",
      "run_dir": "pretraining run directory or null",
      "command": "solo-mixmask knn ...",
      "created": "2026-01-01T00:00:00Z",
      "version": "package version"
    }

Only ``schema``, ``eval``, ``method``, ``variant``, ``dataset`` and ``metrics`` are required to appear
in a report; everything else documents where the number came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ..__version__ import __version__
from ..config.schema import PretrainConfig
from ..config.validation import complete
from ..errors import DataError

SCHEMA = "solo-mixmask/result/1"
VARIANTS = ("vanilla", "unmix", "mixmask", "mixmask_star", "erase")
REQUIRED = ("eval", "method", "variant", "dataset", "metrics")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _get(node: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def base_method(method: str) -> str:
    return str(method).removeprefix("mixmask_")


def variant_of(args: Mapping[str, Any]) -> str:
    """The pretraining variant of a run, from its ``args.json`` / stored config.

    ``mixmask_<base>`` methods default to the MixMask branch being on with ``fill: mix`` (as the
    branch parser does); an erase fill is the erase-based baseline whatever Un-Mix does.
    """
    method = str(_get(args, "method", ""))
    if not method.startswith("mixmask_"):
        return "vanilla"
    mixmask = bool(_get(args, "method_kwargs.mixmask.enabled", True))
    fill = str(_get(args, "method_kwargs.mixmask.fill", "mix"))
    unmix = bool(_get(args, "method_kwargs.unmix.enabled", False))
    if mixmask and fill != "mix":
        return "erase"
    if mixmask:
        return "mixmask_star" if unmix else "mixmask"
    return "unmix" if unmix else "vanilla"


def read_run_args(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """``args.json`` of a run directory, or None when absent or unreadable."""
    path = Path(run_dir) / "args.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pretrain_epochs(obj: Mapping[str, Any], fmt: str, path: Path) -> Optional[int]:
    """Completed pretraining epochs: Lightning stores the 0-based epoch being saved (also in the
    ``-ep=N`` file name), MoCo/MixMask store the next epoch to run."""
    epoch = obj.get("epoch")
    if isinstance(epoch, int):
        return epoch if fmt == "official" else epoch + 1
    m = re.search(r"-ep=(\d+)\.ckpt$", path.name)
    return int(m.group(1)) + 1 if m else None


def provenance(path: str | os.PathLike, obj: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """What a checkpoint says about its pretraining: method, variant, dataset, backbone, epochs.

    The config comes from the checkpoint (this package stores it) or from the ``args.json`` next to
    it (this package and solo-learn write one per run). Files converted by ``solo-mixmask zoo``
    keep the original's epoch and, for zoo entries, the variant under ``converted_from``; a
    converted file that names no variant is ``unknown`` rather than guessed.
    """
    path = Path(path)
    args = obj.get("cfg") if isinstance(obj.get("cfg"), Mapping) else None
    origin = obj.get("converted_from") if isinstance(obj.get("converted_from"), Mapping) else None
    run_dir: Optional[str] = None
    side = read_run_args(path.parent)
    if side is not None:
        run_dir = str(path.parent.resolve())
        args = args or side
    info: dict[str, Any] = {"checkpoint_format": fmt, "run_dir": run_dir,
                            "epochs": pretrain_epochs(obj, fmt, path)}
    if origin is not None and info["epochs"] is None:
        info["epochs"] = pretrain_epochs(origin, str(origin.get("format")), path)
    if args:
        info.update({
            "method": base_method(_get(args, "method", "unknown")),
            "variant": variant_of(args),
            "pretrain_dataset": _get(args, "data.dataset"),
            "backbone": _get(args, "backbone.name"),
        })
        if info["epochs"] is None:
            info["epochs"] = _get(args, "max_epochs")
    if origin is not None:
        info["variant"] = origin.get("variant") or "unknown"
    return info


def command_line(argv: Optional[Iterable[str]] = None) -> str:
    parts = list(sys.argv if argv is None else argv)
    if parts and Path(parts[0]).name in ("solo-mixmask", "__main__.py"):
        parts[0] = "solo-mixmask"
    return " ".join(shlex.quote(str(p)) for p in parts)


def make_record(eval_kind: str, metrics: Mapping[str, float], *, checkpoint: str | os.PathLike,
                dataset: str, settings: Mapping[str, Any], info: Mapping[str, Any],
                overrides: Optional[Mapping[str, Any]] = None,
                command: Optional[str] = None) -> dict[str, Any]:
    """A record for one evaluation; ``overrides`` (method, variant, epochs, backbone) win over what
    the checkpoint says, for checkpoints that carry no config. ``command`` defaults to this
    process's command line."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "eval": eval_kind,
        "method": info.get("method", "unknown"),
        "variant": info.get("variant", "unknown"),
        "dataset": dataset,
        "backbone": info.get("backbone"),
        "epochs": info.get("epochs"),
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "settings": dict(settings),
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
        "checkpoint_format": info.get("checkpoint_format"),
        "run_dir": info.get("run_dir"),
        "command": command or command_line(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": __version__,
    }
    for key, value in (overrides or {}).items():
        if value is not None:
            record[key] = value
    return record


def record_from_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A ``knn`` record of a pretraining run's own last KNN evaluation (``final_metrics.json``,
    written when ``knn_eval.enabled``), so a reproduction need not re-run ``knn`` on every
    checkpoint. ``settings.bank`` says whether the bank was clean images or training crops."""
    run_dir = Path(run_dir)
    args = read_run_args(run_dir)
    try:
        final = json.loads((run_dir / "final_metrics.json").read_text())
    except (OSError, ValueError):
        final = {}
    if args is None or "val_knn_acc1" not in final:
        raise DataError(f"{run_dir}: no args.json or no final KNN accuracy (final_metrics.json "
                        "with val_knn_acc1; pretrain with knn_eval.enabled=true)")
    ckpts = sorted(run_dir.glob("*-ep=*.ckpt"), key=lambda c: int(re.findall(r"ep=(\d+)", c.name)[-1]))
    if not ckpts:
        raise DataError(f"{run_dir}: no checkpoint")
    knn = complete({"knn_eval": args.get("knn_eval") or {}}, PretrainConfig).knn_eval
    settings = {"k": knn.k, "temperature": knn.T, "distance": knn.distance_func,
                "bank": knn.bank, "feature": knn.feature, "vote": knn.vote,
                "source": "pretraining monitor"}
    metrics = {"acc1": final["val_knn_acc1"]}
    if "val_knn_acc5" in final:
        metrics["acc5"] = final["val_knn_acc5"]
    info = provenance(ckpts[-1], {"cfg": args, "epoch": None}, "solo_mixmask")
    return make_record("knn", metrics, checkpoint=ckpts[-1],
                       dataset=str(_get(args, "data.dataset", "unknown")), settings=settings,
                       info=info, command=f"solo-mixmask pretrain ({run_dir.resolve()})")


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def write_record(record: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """Writes ``<out_dir>/<eval>-<method>-<variant>-<dataset>-<time>.json`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "-".join(_slug(record.get(k)) for k in ("eval", "method", "variant", "dataset"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = out / f"{stem}-{stamp}.json"
    n = 1
    while path.exists():
        path = out / f"{stem}-{stamp}-{n}.json"
        n += 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _records_in(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    return [r for r in items if isinstance(r, dict) and r.get("schema") == SCHEMA]


def load_records(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record under ``root`` (``*.json`` holding one record or a list, ``*.jsonl`` one per
    line); other JSON files (args.json, metrics) are ignored. Records missing a required key are a
    DataError naming the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"results directory not found: {root}")
    records = []
    for path in sorted(list(root.rglob("*.json")) + list(root.rglob("*.jsonl"))):
        try:
            found = _records_in(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read result record {path}: {exc}") from None
        for rec in found:
            missing = [k for k in REQUIRED if k not in rec]
            if missing:
                raise DataError(f"result record {path} lacks {', '.join(missing)}")
            rec.setdefault("_file", str(path))
            records.append(rec)
    return records
