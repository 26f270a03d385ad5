"""Batched crop recipe (solo_mixmask.data.batched) vs the per-image recipe, and kornia if installed.

CIFAR-10's BYOL recipe (scripts/pretrain/cifar/augmentations/asymmetric.yaml: two 32 px crops per
image, random resized crop, colour jitter, grayscale, solarization on the second crop, flip) on the
same real CIFAR-10 training images, in one process:

* batched:   ``BatchedMultiCrop`` on uint8 batches of --batch images (on --device);
* per-image: ``augmentations.build_pretrain_transform`` image by image, as a DataLoader worker runs it
  (always on the CPU: that is the path the batched one replaces);
* kornia:    a kornia.augmentation pipeline of the same recipe on float batches (on --device), only
  when kornia is importable; kornia is no dependency of solo_mixmask.

Source images per second are reported (each yields 2 crops). The paths are interleaved within each
repetition, in alternating order; the median images/s over repetitions and the median of the paired
per-repetition ratios are reported, since the speed of a shared machine drifts. On CUDA, timings
are bracketed by ``torch.cuda.synchronize``.

    python benchmarks/batched_aug.py                      # CPU, torch's default thread count
    python benchmarks/batched_aug.py --threads 1          # one core, as one DataLoader worker
    python benchmarks/batched_aug.py --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omegaconf import OmegaConf  # noqa: E402
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402

from solo_mixmask.data.augmentations import build_pretrain_transform  # noqa: E402
from solo_mixmask.data.batched import BatchedMultiCrop  # noqa: E402
from solo_mixmask.data.info import DATASETS  # noqa: E402
from solo_mixmask.data.npz import load_npz, shared_data_dir  # noqa: E402

RECIPE = REPO / "scripts" / "pretrain" / "cifar" / "augmentations" / "asymmetric.yaml"
MEAN, STD = DATASETS["cifar10"].mean, DATASETS["cifar10"].std


def load_images(data: Path, count: int) -> torch.Tensor:
    """The first ``count`` CIFAR-10 training images, decoded to one uint8 (N, 3, 32, 32) tensor."""
    z = load_npz(data / "cifar10-jpeg" / "train.npz")
    jpeg, offsets = z["jpeg"], z["offsets"]
    blobs = [torch.from_numpy(jpeg[offsets[i]:offsets[i + 1]].copy()) for i in range(count)]
    return torch.stack(decode_jpeg(blobs, mode=ImageReadMode.RGB))


Crop = Callable[[torch.Tensor], torch.Tensor]


def kornia_pipeline(augs, device: torch.device) -> Optional[list[Crop]]:
    """One kornia pipeline per crop of the recipe (same ops and probabilities), or None."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    crops = []
    for aug in augs:
        cj = aug.color_jitter
        ops = [K.RandomResizedCrop((aug.crop_size, aug.crop_size),
                                   scale=(aug.rrc.crop_min_scale, aug.rrc.crop_max_scale),
                                   resample="BICUBIC", cropping_mode="resample"),
               K.ColorJitter(cj.brightness, cj.contrast, cj.saturation, cj.hue, p=cj.prob),
               K.RandomGrayscale(p=aug.grayscale.prob)]
        if aug.solarization.prob > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=aug.solarization.prob))
        ops += [K.RandomHorizontalFlip(p=aug.horizontal_flip.prob),
                K.Normalize(torch.tensor(MEAN), torch.tensor(STD))]
        seq = torch.nn.Sequential(*ops).to(device)
        crops += [seq] * int(aug.num_crops)
    return [lambda x, seq=seq: seq(x.float().div_(255.0)) for seq in crops]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default: found)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--batches", type=int, default=2, help="timed batches per path and repetition")
    ap.add_argument("--per-image", type=int, default=512,
                    help="images timed per repetition on the per-image path")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or shared_data_dir()
    if data is None:
        sys.exit("no shared data folder: pass --data or set SOLO_MIXMASK_DATA")
    device = torch.device(args.device)
    augs = OmegaConf.load(RECIPE)
    images = load_images(data, max(args.batch * args.batches, args.per_image))
    on_device = images.to(device)

    batched = BatchedMultiCrop(augs, MEAN, STD)
    gen = torch.Generator(device=device).manual_seed(0)
    per_image = build_pretrain_transform(augs, MEAN, STD)
    kornia = kornia_pipeline(augs, device)
    n_crops = batched.num_crops

    def run_batched() -> float:
        sync(device)
        t = time.perf_counter()
        for i in range(args.batches):
            batched(on_device[i * args.batch:(i + 1) * args.batch], gen)
        sync(device)
        return args.batch * args.batches / (time.perf_counter() - t)

    def run_per_image() -> float:
        t = time.perf_counter()
        for img in images[:args.per_image]:
            per_image(img)
        return args.per_image / (time.perf_counter() - t)

    def run_kornia() -> float:
        assert kornia is not None
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(args.batches):
                x = on_device[i * args.batch:(i + 1) * args.batch]
                for crop in kornia:
                    crop(x)
        sync(device)
        return args.batch * args.batches / (time.perf_counter() - t)

    paths: dict[str, Callable[[], float]] = {"batched": run_batched, "per-image": run_per_image}
    if kornia is not None:
        paths["kornia"] = run_kornia
    for fn in paths.values():  # warm-up (first-call allocations, CUDA context, kernels)
        _ = fn()
    rates: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            rates[name].append(paths[name]())

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"recipe {RECIPE.relative_to(REPO)}: {n_crops} crops of 32 px per image; "
          f"device {device}, torch threads {torch.get_num_threads()}, load {load:.2f}, "
          f"torch {torch.__version__}")
    print(f"{'path':<12}{'where':<8}{'images/s':>10}{'crops/s':>10}  {'reps (images/s)'}")
    for name in names:
        med = statistics.median(rates[name])
        where = "cpu" if name == "per-image" else str(device)
        reps = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:<12}{where:<8}{med:>10.0f}{med * n_crops:>10.0f}  {reps}")
    ratios = "  ".join(
        f"{name} / per-image = "
        f"{statistics.median(a / b for a, b in zip(rates[name], rates['per-image'])):.2f}"
        for name in names if name != "per-image")
    print(f"median of paired per-repetition ratios: {ratios}")
    if kornia is None:
        print("(kornia not installed: pip install kornia to add it)")


if __name__ == "__main__":
    main()
