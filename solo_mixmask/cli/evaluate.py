"""Evaluation subcommands: ``knn``, ``linear``, ``semi``, ``export-detectron2`` and ``report``.

``knn`` takes a checkpoint and two ImageFolder trees; ``linear`` and ``semi`` take a solo-learn style
config (``--config-path DIR --config-name NAME key=value ...``). Each evaluation prints its numbers and
writes a JSON result record (``solo_mixmask/eval/records.py``) that ``report`` tabulates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from ..eval.linear import EvalResult


def _knn_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint of this package, solo-learn or MoCo/MixMask")
    p.add_argument("--train-path", required=True, help="ImageFolder tree of the feature bank")
    p.add_argument("--val-path", required=True, help="ImageFolder tree to classify")
    p.add_argument("--dataset", default=None,
                   help="dataset name for the normalisation statistics and the record (default: "
                   "the checkpoint's pretraining dataset, else ImageNet statistics)")
    p.add_argument("--crop-size", type=int, default=None,
                   help="centre crop size (default: the checkpoint's, else 32 for CIFAR, 64 for "
                   "Tiny-ImageNet, 224 otherwise)")
    p.add_argument("--k", type=int, default=None,
                   help="neighbours (default 200 for --vote weighted, 5 for --vote majority)")
    p.add_argument("--temperature", "-T", type=float, default=0.1,
                   help="temperature of the cosine weights exp(sim/T) (default 0.1)")
    p.add_argument("--distance", choices=("cosine", "euclidean"), default="cosine",
                   help="cosine (InstDisc/Un-Mix) or solo-learn's inverse euclidean weights")
    p.add_argument("--feature", choices=("backbone", "projector"), default="backbone",
                   help="compare backbone features (default) or the projection head's output "
                   "(Un-Mix's CIFAR MoCo monitor; needs a checkpoint of this package)")
    p.add_argument("--vote", choices=("weighted", "majority"), default="weighted",
                   help="weighted (default) or an unweighted count of the k labels; the W-MSE "
                   "protocol is --vote majority --distance euclidean --k 5")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--bank-dtype", choices=("float32", "float16"), default="float32",
                   help="storage of the train features (float16 halves an ImageNet bank)")
    p.add_argument("--test-chunk", type=int, default=1024, help="queries per similarity block")
    p.add_argument("--train-chunk", type=int, default=65536, help="bank rows per similarity block")
    _backbone_arguments(p)
    _record_arguments(p)


def _backbone_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=None,
                   help="backbone name (default: stored in or inferred from the checkpoint)")
    p.add_argument("--backbone-kwargs", default=None, type=json.loads,
                   help='backbone kwargs as JSON, e.g. \'{"width": 0.5}\'')


def _record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", default="results",
                   help="folder of the JSON result record (default: ./results)")
    p.add_argument("--no-record", action="store_true", help="print only, write no record")
    p.add_argument("--method", default=None,
                   help="pretraining method for the record, for checkpoints without a config")
    p.add_argument("--variant", default=None,
                   help="vanilla, unmix, mixmask, mixmask_star or erase (same purpose)")
    p.add_argument("--epochs", type=int, default=None, help="pretraining epochs (same purpose)")


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="ResNet-50 checkpoint (any supported layout)")
    p.add_argument("output", help="Detectron2 weights to write, e.g. r50_mixmask.pkl")
    p.add_argument("--author", default="solo-mixmask", help="the pickle's __author__ field")


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", help="folder of result records (searched recursively)")
    p.add_argument("--runs", nargs="*", default=[],
                   help="pretraining run folders (or parents) whose logs to plot")
    p.add_argument("--out", default=None, help="folder to write report.md and curves.png to "
                   "(default: print the tables only)")
    p.add_argument("--metric", choices=("acc1", "acc5"), default="acc1")
    p.add_argument("--no-plot", action="store_true", help="tables only")


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    from .pretrain import add_config_arguments

    adders: dict[str, Callable[[argparse.ArgumentParser], None]] = {
        "knn": _knn_arguments, "linear": add_config_arguments, "semi": add_config_arguments,
        "export-detectron2": _export_arguments, "report": _report_arguments,
    }
    adders[name](p)


# ----------------------------------------------------------------------------------------- knn
def _stored_cfg(path: str, obj: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The pretraining config inside the checkpoint, else in the ``args.json`` beside it."""
    from ..eval.records import read_run_args

    cfg = obj.get("cfg")
    return cfg if isinstance(cfg, dict) else read_run_args(Path(path).parent)


def _knn_data_cfg(args: argparse.Namespace, stored: Optional[dict[str, Any]]) -> DictConfig:
    """Dataset name, crop size and normalisation: the command line first, then the pretraining
    config when it was trained on the dataset evaluated, then the dataset's defaults."""
    from omegaconf import OmegaConf

    from ..config.datasets import DATASETS, canonical_dataset
    from ..config.eval_schema import EvalDataConfig
    from ..config.validation import validate
    from ..eval.linear import DEFAULT_CROP

    stored_data = (stored or {}).get("data") or {}
    dataset = canonical_dataset(args.dataset or stored_data.get("dataset") or "custom")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {sorted(DATASETS)}")
    own = stored if canonical_dataset(stored_data.get("dataset") or "") == dataset else {}
    own_data = (own or {}).get("data") or {}
    own_aug = ((own or {}).get("augmentations") or [{}])[0]
    crop = args.crop_size or own_aug.get("crop_size") or DEFAULT_CROP.get(dataset, 224)
    mean = own_data.get("mean") or own_aug.get("mean") or DATASETS[dataset].mean
    std = own_data.get("std") or own_aug.get("std") or DATASETS[dataset].std
    data = validate({"dataset": dataset, "train_path": args.train_path, "val_path": args.val_path,
                     "augmentations": {"crop_size": int(crop), "mean": list(mean),
                                       "std": list(std)}}, EvalDataConfig, "data")
    return OmegaConf.create({"data": data})


def _quote(parts: list[Any]) -> str:
    import shlex

    return " ".join(shlex.quote(str(p)) for p in parts)


def knn_command(args: argparse.Namespace, cfg: DictConfig) -> str:
    """The complete command line of a KNN evaluation, defaults spelt out, for its record."""
    aug = cfg.data.augmentations
    parts: list[Any] = ["solo-mixmask", "knn", args.checkpoint, "--train-path", args.train_path,
                        "--val-path", args.val_path, "--dataset", cfg.data.dataset,
                        "--crop-size", aug.crop_size, "--k", args.k, "--temperature",
                        args.temperature, "--distance", args.distance, "--vote", args.vote,
                        "--feature", args.feature]
    if args.backbone:
        parts += ["--backbone", args.backbone]
    if args.backbone_kwargs:
        parts += ["--backbone-kwargs", json.dumps(args.backbone_kwargs)]
    for flag in ("method", "variant", "epochs"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", getattr(args, flag)]
    return _quote(parts)


def config_command(args: argparse.Namespace) -> str:
    parts: list[Any] = ["solo-mixmask", args.command]
    if args.config_path:
        parts += ["--config-path", args.config_path]
    return _quote(parts + ["--config-name", args.config_name, *args.overrides])


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here")
    return torch.device(name)


def run_knn(args: argparse.Namespace) -> int:
    import torch

    from ..data.augmentations import build_eval_transform
    from ..eval.checkpoints import (
        load_backbone,
        load_checkpoint_file,
        load_method,
        resolve_backbone_spec,
        split_backbone,
    )
    from ..eval.features import eval_loader, extract_bank, image_dataset
    from ..eval.knn import knn_accuracy
    from ..eval.linear import check_classes
    from ..eval.records import make_record, provenance, write_record

    if args.k is None:  # W-MSE's k for its majority vote, InstDisc's for the weighted one
        args.k = 5 if args.vote == "majority" else 200
    if args.k < 1 or args.temperature <= 0:
        raise ConfigError("--k must be at least 1 and --temperature positive")
    obj = load_checkpoint_file(args.checkpoint)
    _, fmt = split_backbone(obj)
    info = provenance(args.checkpoint, obj, fmt)
    name, kwargs = resolve_backbone_spec(obj, args.backbone, args.backbone_kwargs)
    cfg = _knn_data_cfg(args, _stored_cfg(args.checkpoint, obj))
    del obj
    backbone, built = load_backbone(args.checkpoint, name, kwargs)
    info["backbone"] = built["name"]
    if args.feature == "projector":
        backbone = load_method(args.checkpoint).knn_encoder("projector")

    aug = cfg.data.augmentations
    transform = build_eval_transform(int(aug.crop_size), list(aug.mean), list(aug.std))
    train = image_dataset(cfg.data, args.train_path, transform, True)
    val = image_dataset(cfg.data, args.val_path, transform, False)
    num_classes = check_classes(cfg, train, val)
    device = _device(args.device)
    backbone = backbone.to(device)
    dtype = torch.float16 if args.bank_dtype == "float16" else torch.float32
    banks = [extract_bank(backbone, eval_loader(ds, args.batch_size, args.num_workers,
                                                pin_memory=device.type == "cuda"),
                          device, dtype, normalize=args.distance == "cosine")
             for ds in (train, val)]
    (tr_f, tr_y), (te_f, te_y) = banks
    top1, top5 = knn_accuracy(tr_f, tr_y, te_f.to(device), te_y, num_classes, args.k,
                              args.temperature, args.distance, vote=args.vote,
                              test_chunk=args.test_chunk, train_chunk=args.train_chunk)
    print(f"KNN ({args.vote} vote, {args.distance}, k={args.k}, T={args.temperature}) on "
          f"{args.val_path}: "
          f"top-1 {top1:.2f}%  top-5 {top5:.2f}%  ({len(tr_f)} train / {len(te_f)} val images)")
    if not args.no_record:
        settings = {"k": args.k, "temperature": args.temperature, "distance": args.distance,
                    "vote": args.vote, "feature": args.feature,
                    "crop_size": int(aug.crop_size),
                    "train_path": str(Path(args.train_path).resolve()),
                    "val_path": str(Path(args.val_path).resolve()),
                    "num_train": len(tr_f), "num_val": len(te_f)}
        record = make_record("knn", {"acc1": top1, "acc5": top5}, checkpoint=args.checkpoint,
                             dataset=cfg.data.dataset, settings=settings, info=info,
                             overrides={"method": args.method, "variant": args.variant,
                                        "epochs": args.epochs},
                             command=knn_command(args, cfg))
        print(f"record: {write_record(record, args.results_dir)}")
    return 0


# ------------------------------------------------------------------------------- linear / semi
def _print_result(kind: str, result: EvalResult) -> None:
    if result.record_path is None:  # another DDP rank: rank zero reports
        return
    m = result.metrics
    print(f"{kind}: top-1 {m['acc1']:.2f}%  top-5 {m['acc5']:.2f}%")
    print(f"run directory: {result.run_dir}")
    print(f"record: {result.record_path}")


def _config(args: argparse.Namespace) -> DictConfig:
    from ..config import load_config

    return load_config(args.config_path, args.config_name, list(args.overrides))


def run_linear_command(args: argparse.Namespace) -> int:
    from ..eval.linear import run_linear

    cfg = _config(args)
    _print_result("linear", run_linear(cfg, command=config_command(args)))
    return 0


def run_semi_command(args: argparse.Namespace) -> int:
    from ..eval.semi import run_semi

    cfg = _config(args)
    result = run_semi(cfg, command=config_command(args))
    _print_result(f"semi ({result.record['settings']['labels']} labels)", result)
    return 0


# ------------------------------------------------------------------------------ export, report
def run_export(args: argparse.Namespace) -> int:
    from ..eval.detectron2 import export_detectron2

    info = export_detectron2(args.checkpoint, args.output, author=args.author)
    print(f"wrote {info['keys']} Detectron2 weights ({info['format']} checkpoint) to "
          f"{info['output']}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..eval.report import build_report

    report = build_report(args.results_dir, args.runs, args.out, args.metric,
                          plot=not args.no_plot)
    print(report.markdown)
    if report.markdown_path is not None:
        print(f"wrote {report.markdown_path}" + (f" and {report.figure_path}"
                                                  if report.figure_path else ""))
    return 0


RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "knn": run_knn, "linear": run_linear_command, "semi": run_semi_command,
    "export-detectron2": run_export, "report": run_report,
}


def run(args: argparse.Namespace) -> int:
    return RUNNERS[args.command](args)
