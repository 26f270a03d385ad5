"""Vanilla vs MixMask MoCo v2, full-width ResNet-18 on CIFAR-10, on one GPU for a fixed budget.

    python benchmarks/gpu_cifar.py calibrate --data DIR --out OUT        # one MixMask epoch, timed
    python benchmarks/gpu_cifar.py run --variant vanilla --epochs N --data DIR --out OUT
    python benchmarks/gpu_cifar.py run --variant mixmask --epochs N --data DIR --out OUT

``DIR`` holds ``cifar10-jpeg/{train,test}.npz`` (the packed real images). Both variants use
``scripts/pretrain/cifar/mocov2plus{,_mixmask}.yaml`` (the paper's MoCo v2 recipe: asymmetric loss,
queue 4096, momentum 0.99, temperature 0.1, batch 512, cosine) on CIFAR-10 with the same seed and
the same number of epochs, chosen so that the slower variant (MixMask) fits the time budget. Each run
ends with KNN top-1 (k=200, T=0.1, clean train bank) on the 10,000 test images and writes a result
record plus its CSV logs under OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def overrides(args: argparse.Namespace, epochs: int) -> list[str]:
    from solo_mixmask.data.npz import unpack_npz

    per_class = args.per_class
    tag = per_class or "all"
    train = unpack_npz(args.data / "cifar10-jpeg" / "train.npz", Path(f"/tmp/cifar10/train-{tag}"),
                       per_class)
    test = unpack_npz(args.data / "cifar10-jpeg" / "test.npz", Path(f"/tmp/cifar10/test-{tag}"),
                      per_class)
    out = [f"data.train_path={train}", f"data.val_path={test}", "data.dataset=cifar10",
           f"data.num_workers={args.workers}", f"max_epochs={epochs}", "devices=1",
           "knn_eval.frequency=1000", "auto_resume.enabled=false",
           "checkpoint.dir=/tmp/gpu_runs", "++seed=0", "++enable_progress_bar=false"]
    if args.cpu_smoke:
        out += ["accelerator=cpu", "precision=32", "optimizer.batch_size=32",
                "++limit_train_batches=2", "++backbone.kwargs.width=0.125"]
    else:
        out += ["accelerator=gpu", "precision=bf16-mixed"]
    return out


def train(variant: str, epochs: int, args: argparse.Namespace, callbacks=()):
    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import pretrain

    name = "mocov2plus.yaml" if variant == "vanilla" else f"mocov2plus_{variant}.yaml"
    cfg = load_config(str(REPO / "scripts/pretrain/cifar"), name, overrides(args, epochs))
    start = time.time()
    result = pretrain(cfg, callbacks=list(callbacks))
    return result, time.time() - start, name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["calibrate", "run"])
    ap.add_argument("--variant", default="mixmask")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--budget-s", type=float, default=240.0, help="calibrate: seconds per run")
    ap.add_argument("--per-class", type=int, default=None, help="a subset (smoke runs)")
    ap.add_argument("--cpu-smoke", action="store_true", help="a tiny CPU run of the same code")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if args.mode == "calibrate":
        from lightning.pytorch.callbacks import Callback

        ends: list[float] = []

        class EpochClock(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                ends.append(time.time())

        result, wall, _ = train("mixmask", 3, args, [EpochClock()])
        per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1)  # steady state, start-up excluded
        fixed = wall - per_epoch * len(ends)  # start-up, first-epoch warm-up, final KNN
        epochs = max(1, math.floor((args.budget_s - fixed) / per_epoch))
        info = {"device": device, "mixmask_seconds_per_epoch": round(per_epoch, 2),
                "fixed_seconds": round(fixed, 1), "epochs_for_budget": epochs,
                "budget_s": args.budget_s}
        (args.out / "calibration.json").write_text(json.dumps(info, indent=2))
        print(json.dumps(info))
        return 0
    from solo_mixmask.eval.records import record_from_run, write_record

    result, wall, name = train(args.variant, args.epochs, args)
    record = record_from_run(result.run_dir)
    record["variant"] = args.variant
    record["command"] = (f"python benchmarks/gpu_cifar.py run --variant {args.variant} "
                         f"--epochs {args.epochs} (scripts/pretrain/cifar/{name}, CIFAR-10)")
    record["settings"].update({"wall_time_s": round(wall, 1), "device": device,
                               "epochs": args.epochs, "batch_size": 512,
                               "backbone": "resnet18 (1x, CIFAR stem)"})
    kept = f"runs/gpu-mocov2plus-{args.variant}"
    record["run_dir"] = kept
    write_record(record, args.out)
    dest = args.out / kept
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.run_dir / "args.json", dest / "args.json")
    for csv in result.run_dir.glob("logs/version_*/metrics.csv"):
        (dest / csv.parent.relative_to(result.run_dir)).mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, dest / csv.relative_to(result.run_dir))
    print(json.dumps({"variant": args.variant, "epochs": args.epochs, "wall_s": round(wall, 1),
                      "knn_top1": record["metrics"]["acc1"], "device": device}))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait on DataLoader worker teardown, which can stall at exit on GPU
