"""Pretraining data-path throughput: our torchvision loader, our DALI loader (CPU here), our
device-resident loader (32 px only) and, when an interpreter with solo-learn is given, solo-learn's
torchvision loader, side by side.

Every measurement runs in a fresh process (so the peak memory is that configuration's own): it builds
the loader, opens an iterator (worker start-up included), skips a few batches, then times the next
ones. Source images per second are reported (each yields 2 crops); peak RSS is the largest sum of the
resident memory of the process and its workers, sampled every 50 ms. The paths are interleaved within
each repetition, in an order that alternates, and ``ours / solo-learn`` is the median of the paired
per-repetition ratios, since the speed of a shared machine drifts; ``vs torchvision`` is the same
paired median against our torchvision path.

The device path (``data.format: device``, here on the CPU) decodes the images once into one uint8
tensor (cached on disk, before the timing starts) and makes each batch's crops with
``BatchedMultiCrop`` on the batch gathered from it, in the training process: no workers, and its
"workers/threads" value is the torch thread count of that process. It is measured at 32 px only, the
image sizes it is meant for.

Data (real JPEGs from ../shared/data, unpacked once into --cache):
  cifar:      CIFAR-10 train, the first 1,000 images per class (10,000), 32 px, batch 128,
              solo-learn's cifar/augmentations/asymmetric.yaml recipe.
  imagenette: Imagenette train_200pc (2,000), 224 px, batch 64, imagenet-100 asymmetric recipe
              (blur 1.0 / 0.1, solarization 0 / 0.2).

    python benchmarks/data_throughput.py                       # ours (torchvision + DALI)
    python benchmarks/data_throughput.py --solo-python /path/to/venv-with-solo-learn/bin/python
    python benchmarks/data_throughput.py --reps 1 --datasets cifar --workers 2   # a quick look
    python benchmarks/data_throughput.py --datasets cifar --workers 1 --paths torchvision,device
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]

RECIPE = {
    "rrc": {"enabled": True, "crop_min_scale": 0.08, "crop_max_scale": 1.0},
    "color_jitter": {"prob": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2,
                     "hue": 0.1},
    "grayscale": {"prob": 0.2},
    "gaussian_blur": {"prob": 0.0},
    "solarization": {"prob": 0.0},
    "equalization": {"prob": 0.0},
    "horizontal_flip": {"prob": 0.5},
    "num_crops": 1,
}

DATASETS: dict[str, dict[str, Any]] = {
    "cifar": {"npz": "cifar10-jpeg/train.npz", "per_class": 1000, "size": 32, "batch": 128,
              "skip": 4, "timed": 40, "ours": "cifar10", "solo_tf": "cifar10",
              "solo_ds": "custom", "blur": (0.0, 0.0), "solar": (0.0, 0.2), "device": True},
    "imagenette": {"npz": "imagenette2-224px/train_200pc.npz", "per_class": None, "size": 224,
                   "batch": 64, "skip": 2, "timed": 12, "ours": "custom",  # 10 class folders
                   "solo_tf": "imagenet100", "solo_ds": "imagenet100", "blur": (1.0, 0.1),
                   "solar": (0.0, 0.2), "device": False},
}


def recipes(name: str) -> list[dict[str, Any]]:
    """The two asymmetric crop recipes of ``name``."""
    spec = DATASETS[name]
    out = []
    for blur, solar in zip(spec["blur"], spec["solar"]):
        r = json.loads(json.dumps(RECIPE))
        r.update(crop_size=spec["size"], gaussian_blur={"prob": blur},
                 solarization={"prob": solar})
        out.append(r)
    return out


# ------------------------------------------------------------------------------ memory sampling
def _tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in kB (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


class PeakRSS:
    """Samples the process tree's resident memory in a thread; ``peak_mb`` is the largest sum."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_kb = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


# ------------------------------------------------------------------------------ one measurement
def _our_loader(path: str, name: str, root: str, workers: int) -> Any:
    from omegaconf import OmegaConf

    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    spec = DATASETS[name]
    cfg = OmegaConf.create({
        "method": "simclr", "backbone": {"name": "resnet18"},
        "method_kwargs": {"proj_hidden_dim": 2048, "proj_output_dim": 128, "temperature": 0.2},
        "data": {"dataset": spec["ours"], "train_path": root, "num_workers": workers,
                 "format": path if path in ("dali", "device") else "image_folder",
                 "device": {"cache_dir": str(Path(root).parent / "resident")}},
        "dali": {"device": "cpu", "threads": workers},
        "augmentations": recipes(name),
        "optimizer": {"name": "sgd", "batch_size": spec["batch"], "lr": 0.1},
        "accelerator": "cpu",
    })
    cfg = parse_pretrain_cfg(cfg)
    from solo_mixmask.data.pipeline import build_pretrain_data

    # the device format decodes once (or reads its cache) here, before the timing starts
    return build_pretrain_data(cfg, gpu=False).train


def _solo_loader(name: str, root: str, workers: int) -> Any:
    """solo-learn's own pretraining loader, built as its main_pretrain.py builds it."""
    from omegaconf import OmegaConf
    from solo.data.pretrain_dataloader import (
        FullTransformPipeline,
        NCropAugmentation,
        build_transform_pipeline,
        prepare_dataloader,
        prepare_datasets,
    )

    spec = DATASETS[name]
    pipelines = [NCropAugmentation(build_transform_pipeline(spec["solo_tf"], OmegaConf.create(r)),
                                   r["num_crops"]) for r in recipes(name)]
    dataset = prepare_datasets(spec["solo_ds"], FullTransformPipeline(pipelines),
                               train_data_path=root, no_labels=False)
    return prepare_dataloader(dataset, batch_size=spec["batch"], num_workers=workers)


def measure(path: str, name: str, root: str, workers: int, skip: int, timed: int) -> dict:
    """Images/s over ``timed`` batches after ``skip``, and the peak RSS of the whole run."""
    import torch

    # the device path computes in this process: its "workers" are this process's threads
    torch.set_num_threads(workers if path == "device" else 2)
    with PeakRSS() as mem:
        loader = _solo_loader(name, root, workers) if path == "solo" else _our_loader(
            path, name, root, workers)
        start = time.perf_counter()
        it = iter(loader)
        images, t0 = 0, None
        for step in range(skip + timed):
            idx, crops, _ = next(it)
            assert len(crops) == 2 and crops[0].shape[-1] == DATASETS[name]["size"]
            if step == skip - 1:
                t0 = time.perf_counter()
            elif step >= skip:
                images += len(idx)
        elapsed = time.perf_counter() - (t0 or start)
        del it, loader
    return {"img_s": images / elapsed, "peak_rss_mb": mem.peak_mb}


# ------------------------------------------------------------------------------------ the driver
def prepare_data(data: Path, cache: Path, name: str) -> Path:
    sys.path.insert(0, str(REPO))
    from solo_mixmask.data.npz import unpack_npz

    spec = DATASETS[name]
    tag = f"{name}-{spec['per_class']}pc" if spec["per_class"] else name
    return unpack_npz(data / spec["npz"], cache / tag, per_class=spec["per_class"])


def run_child(python: str, path: str, name: str, root: Path, workers: int, args) -> dict:
    spec = DATASETS[name]
    skip, timed = spec["skip"], max(2, int(spec["timed"] * args.scale))
    cmd = [python, __file__, "--child", path, "--datasets", name, "--root", str(root),
           "--workers", str(workers), "--skip", str(skip), "--timed", str(timed)]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{path}/{name}/nw={workers} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/solo-mixmask-bench"),
                    help="where the ImageFolder trees are unpacked")
    ap.add_argument("--datasets", default="cifar,imagenette")
    ap.add_argument("--workers", default="1,2", help="DataLoader workers / DALI threads")
    ap.add_argument("--paths", default="torchvision,dali,device,solo")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per configuration")
    ap.add_argument("--scale", type=float, default=1.0, help="scales the timed batch counts")
    ap.add_argument("--solo-python", default=os.environ.get("SOLO_LEARN_PYTHON"),
                    help="an interpreter that can import solo-learn (default: this one, if it can)")
    ap.add_argument("--json", type=Path, default=None, help="write the raw results here")
    # one measurement (internal)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--timed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(measure(args.child, args.datasets, args.root, int(args.workers),
                                 args.skip, args.timed)))
        return 0

    sys.path.insert(0, str(REPO))
    from solo_mixmask.data.npz import shared_data_dir

    data = args.data or shared_data_dir()
    if data is None:
        print("no shared data folder found: pass --data", file=sys.stderr)
        return 2
    paths = args.paths.split(",")
    solo_python = args.solo_python
    if "solo" in paths and not solo_python:
        probe = subprocess.run([sys.executable, "-c", "import solo.data.pretrain_dataloader"],
                               capture_output=True)
        solo_python = sys.executable if probe.returncode == 0 else None
    if "solo" in paths and solo_python is None:
        print("solo-learn is not importable here (pass --solo-python): measuring ours only")
        paths.remove("solo")
    if "dali" in paths:
        from solo_mixmask.data.dali import dali_available

        if not dali_available():
            print("NVIDIA DALI is not installed: skipping the DALI path")
            paths.remove("dali")

    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, paths {paths}, {args.reps} repetitions")
    results: list[dict] = []
    for name in args.datasets.split(","):
        root = prepare_data(Path(data), args.cache, name)
        for workers in (int(w) for w in args.workers.split(",")):
            here = [p for p in paths if p != "device" or DATASETS[name]["device"]]
            for rep in range(args.reps):
                order = here if rep % 2 == 0 else here[::-1]
                for path in order:
                    python = solo_python if path == "solo" else sys.executable
                    r = run_child(python, path, name, root, workers, args)
                    r.update(dataset=name, workers=workers, path=path, rep=rep,
                             load=os.getloadavg()[0])
                    results.append(r)
                    print(f"  {name:10s} nw={workers} rep {rep} {path:11s} "
                          f"{r['img_s']:8.1f} img/s  peak RSS {r['peak_rss_mb']:7.0f} MB",
                          flush=True)

    print("\n| data | workers/threads | path | images/s median [min-max] | peak RSS (MB) |"
          " ours / solo-learn (paired median) | vs torchvision (paired median) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            rows = {p: [r for r in results if r["dataset"] == name and r["workers"] == workers
                        and r["path"] == p] for p in paths}
            rows = {p: v for p, v in rows.items() if v}  # the device path runs at 32 px only
            for p in rows:
                speeds = [r["img_s"] for r in rows[p]]
                ratio = ""
                if "solo" in rows and p != "solo":
                    pairs = [a["img_s"] / b["img_s"] for a, b in zip(rows[p], rows["solo"])]
                    ratio = f"{statistics.median(pairs):.2f}"
                vs_tv = ""
                if "torchvision" in rows and p not in ("torchvision", "solo"):
                    pairs = [a["img_s"] / b["img_s"] for a, b in zip(rows[p], rows["torchvision"])]
                    vs_tv = f"{statistics.median(pairs):.2f}"
                mem = statistics.median(r["peak_rss_mb"] for r in rows[p])
                print(f"| {name} | {workers} | {p} | {_fmt(speeds)} | {mem:.0f} | {ratio} | {vs_tv} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
