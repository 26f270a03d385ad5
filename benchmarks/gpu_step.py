"""MoCo v2 and MixMask-MoCo v2 on one GPU: data-only images/s, training images/s, peak GPU memory.

ResNet-50, 224 px, batch 256, bf16-mixed, channels_last, the project's
``scripts/pretrain/imagenet/mocov2plus{,_mixmask}.yaml``, on the real Imagenette JPEGs (the packed
``train_200pc.npz`` or an ImageFolder tree, given with --data). Reports, in a few minutes:

- data (GPU decode): NVIDIA DALI's pipeline (``data.format: dali``, mixed decoding) when DALI is
  installed; otherwise ``torchvision.io.decode_jpeg(device='cuda')`` batch decoding followed by the
  package's batched crop recipe on the GPU (``solo_mixmask.data.batched``, the device path's). The
  table says which decoder ran.
- data (CPU loader): the engine's torchvision DataLoader with one worker per CPU core (up to 16),
  timed over whole epochs after a first one (each epoch refills the worker pipeline).
- training: ``Trainer.fit`` on 4 pre-made GPU batches, cycled, so the data path is excluded; the step
  time is the median interval between batch ends after the warm-up steps (synchronised).
- peak GPU memory: ``torch.cuda.max_memory_allocated`` over each method's run.

omegaconf, hydra-core and antlr4-python3-runtime are needed; when they are missing they are installed
from the wheels in ``.whl/`` (``benchmarks/prepare_device.py`` builds them) into the temporary folder.

    python benchmarks/gpu_step.py --data datasets/imagenette2-224px/train_200pc.npz
    python benchmarks/gpu_step.py --data PATH --device cpu --arch resnet18 --size 64 --batch 8 \\
        --steps 2 --data-batches 2 --precision 32          # a CPU smoke run
    python benchmarks/gpu_step.py --data PATH --also split_bn=reshape \
        --also +method_kwargs.bn_splits=1 --also +performance.compile=true --profile

An ``--also`` round is a list of config overrides, plus one token of this script's own:
``split_bn=reshape`` swaps the SplitBatchNorm layers for the classic single-call form (the batch
reshaped to ``(N / s, C * s, H, W)``), which copies channels-last activations to NCHW; it is kept
here as the before-and-after reference of the per-group form the package uses.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from device_env import REPO, bootstrap


# ----------------------------------------------------------------------------------------- data
def load_jpegs(data: Path) -> tuple[list[Any], list[int], Path]:
    """JPEG bytes (uint8 tensors), labels, and an ImageFolder tree of the same files."""
    import numpy as np
    import torch

    from solo_mixmask.data.datasets import scan_image_folder
    from solo_mixmask.data.npz import unpack_npz

    if data.suffix == ".npz":
        root = unpack_npz(data, Path(tempfile.gettempdir()) / f"gpu-step-{data.stem}")
    else:
        root = data
    images = scan_image_folder(root)
    raw = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in images.paths]
    return raw, images.targets, root


class GPUDecodeLoader:
    """Batches of ``[indexes, [crops], targets]`` decoded and augmented on ``device`` (no DALI):
    the package's batched recipe on the decoded images (one pass when they share a size)."""

    def __init__(self, raw: list, targets: list, cfg: Any, batch: int, device: str) -> None:
        import torch

        from solo_mixmask.data.batched import BatchedMultiCrop
        from solo_mixmask.data.recipe import Recipe

        self.raw, self.batch, self.device = raw, batch, device
        self.targets = torch.as_tensor(targets)
        self.recipe = BatchedMultiCrop(Recipe.from_sections(cfg.augmentations, cfg.data))
        self.generator = torch.Generator(device=device).manual_seed(0)

    def __len__(self) -> int:
        return len(self.raw) // self.batch

    def __iter__(self):
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        order = torch.randperm(len(self.raw))
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch]
            imgs = decode_jpeg([self.raw[j] for j in idx.tolist()], mode=ImageReadMode.RGB,
                               device=self.device)
            uniforms = self.recipe.draw(len(imgs), self.generator)
            crops = self.recipe.apply_images(imgs, uniforms)
            yield [idx.to(self.device), crops, self.targets[idx].to(self.device)]


def time_loader(loader: Any, batches: int, warmup: int, sync: Any) -> float:
    """Images/s over ``batches`` batches after ``warmup`` (epochs restart as needed)."""
    def forever():
        while True:
            yield from loader

    it = forever()
    for _ in range(warmup):
        next(it)
    sync()
    t = time.perf_counter()
    n = sum(len(next(it)[0]) for _ in range(batches))
    sync()
    return n / (time.perf_counter() - t)


def time_epochs(loader: Any, batches: int) -> float:
    """Images/s over whole epochs after a first (worker start-up) epoch: with many workers the
    prefetched batches would otherwise flatter a short timing window."""
    images = 0
    for _ in loader:
        pass
    epochs = max(1, math.ceil(batches / max(1, len(loader))))
    t = time.perf_counter()
    for _ in range(epochs):
        images += sum(len(b[0]) for b in loader)
    return images / (time.perf_counter() - t)


# ------------------------------------------------------------------------------------- training
RESHAPE_BN = "split_bn=reshape"  # an --also token of this script's own, not a config override


def reshape_split_bn(model: Any) -> int:
    """Turns every SplitBatchNorm2d of ``model`` into the single-call reshape form; returns how many."""
    import torch.nn.functional as nnf

    from solo_mixmask.backbones import SplitBatchNorm2d

    class ReshapeSplitBatchNorm2d(SplitBatchNorm2d):
        def forward(self, x: Any) -> Any:
            n, c, h, w = x.shape
            s = self.num_splits
            if not self.training or s <= 1:
                return super().forward(x)
            means, vars_ = self.running_mean.repeat(s), self.running_var.repeat(s)
            out = nnf.batch_norm(x.reshape(n // s, c * s, h, w), means, vars_,
                                 self.weight.repeat(s), self.bias.repeat(s), True,
                                 self.momentum or 0.1, self.eps).reshape(n, c, h, w)
            self.running_mean.copy_(means.view(s, c).mean(0))
            self.running_var.copy_(vars_.view(s, c).mean(0))
            return out

    swapped = 0
    for m in model.modules():
        if type(m) is SplitBatchNorm2d:
            m.__class__ = ReshapeSplitBatchNorm2d
            swapped += 1
    return swapped


def build_model(cfg: Any, reshape_bn: bool = False) -> tuple[Any, int]:
    """The method as the engine builds it (channels-last when configured), and how many
    SplitBatchNorm layers took the reshape form."""
    import torch

    from solo_mixmask.methods import METHODS

    model = METHODS[cfg.method](cfg)
    swapped = reshape_split_bn(model) if reshape_bn else 0
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, swapped


def profile_step(cfg: Any, batches: list, steps: int, device: str, top: int = 15) -> str:
    """The kernels of ``steps`` training steps (after 3 unprofiled ones), by self device time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = build_model(cfg)[0].to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    bf16 = str(cfg.precision).startswith("bf16")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(i: int) -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_step(batches[i % len(batches)], i)  # self.log is a no-op here
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    sync()
    cuda = device == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
        sync()
    keys = ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)
    for key in keys:
        try:
            return prof.key_averages().table(sort_by=key, row_limit=top,
                                             max_name_column_width=70)
        except (AttributeError, KeyError, ValueError):
            continue
    return prof.key_averages().table(row_limit=top)


def build_cfg(method: str, args: Any, root: Path, extra: Sequence[str] = ()) -> Any:
    from solo_mixmask.config.loading import load_config
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    name = "mocov2plus_mixmask" if method.startswith("mixmask_") else "mocov2plus"
    gpu = args.device != "cpu"
    overrides = [f"optimizer.batch_size={args.batch}", f"backbone.name={args.arch}",
                 f"data.train_path={root}", "data.val_path=null",
                 f"accelerator={'gpu' if gpu else 'cpu'}", "devices=1",
                 f"precision={args.precision}", "+performance.channels_last=true",
                 f"data.num_workers={args.workers}", f"+dali.device={'gpu' if gpu else 'cpu'}",
                 "checkpoint.enabled=false", "auto_resume.enabled=false", *extra]
    cfg = load_config(str(REPO / "scripts" / "pretrain" / "imagenet"), name, overrides)
    for aug in cfg.augmentations:
        aug.crop_size = args.size
    return parse_pretrain_cfg(cfg)


def train_speed(cfg: Any, batches: list, steps: int, warmup: int, device: str,
                reshape_bn: bool = False) -> dict:
    import lightning.pytorch as pl
    import torch

    class Cycle:
        def __len__(self) -> int:
            return steps

        def __iter__(self):
            return (batches[i % len(batches)] for i in range(steps))

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *a: Any) -> None:
            if device != "cpu":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    gc.collect()  # the previous method's model and trainer must not count in this peak
    pl.seed_everything(0, verbose=False)
    model, swapped = build_model(cfg, reshape_bn)
    if bool(cfg.performance.compile):  # as the engine does
        model.backbone = torch.compile(model.backbone)
    timer = StepTimer()
    if device != "cpu":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(max_steps=steps, max_epochs=1, accelerator="cpu" if device == "cpu"
                         else "gpu", devices=1, precision=cfg.precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer],
                         num_sanity_val_steps=0)
    trainer.fit(model, Cycle())
    gaps = [b - a for a, b in zip(timer.ends[warmup:], timer.ends[warmup + 1:])]
    step = statistics.median(gaps) if gaps else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else float("nan")
    out = {"step_s": step, "img_s": len(batches[0][0]) / step, "peak_gib": peak,
           "steps_timed": len(gaps), "bn_splits": int(cfg.method_kwargs.get("bn_splits", 1))}
    if reshape_bn:
        out["reshaped_split_bn_layers"] = swapped
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="Imagenette: the packed train_200pc.npz or an ImageFolder tree")
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--steps", type=int, default=25, help="training steps per method")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--data-batches", type=int, default=20, help="timed batches per data path")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                    help="CPU loader workers")
    ap.add_argument("--methods", default="mocov2plus,mixmask_mocov2plus")
    ap.add_argument("--skip-cpu-loader", action="store_true")
    ap.add_argument("--no-dali", action="store_true", help="use the torchvision decoder even when "
                    "DALI is installed")
    ap.add_argument("--also", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="another round of the methods with these config overrides, timed in the "
                    "same run (e.g. +method_kwargs.bn_splits=1, +performance.compile=true, or "
                    "split_bn=reshape for the reshape form of SplitBatchNorm)")
    ap.add_argument("--profile", action="store_true",
                    help="print the top CUDA kernels of the last method's step (first round)")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    bootstrap()
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu for a smoke run")
    if args.device != "cpu":
        torch.backends.cudnn.benchmark = True
    device = "cuda" if args.device != "cpu" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t_start = time.perf_counter()
    raw, targets, root = load_jpegs(args.data)
    methods = args.methods.split(",")
    cfg0 = build_cfg(methods[0], args, root)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                           "torch": torch.__version__, "arch": args.arch, "size": args.size,
                           "batch": args.batch, "precision": args.precision,
                           "images": len(raw), "data": {}, "train": {}}

    # data only
    from solo_mixmask.data.dali import build_dali_pretrain_loader, dali_available
    from solo_mixmask.data.spec import LoaderSpec

    spec = LoaderSpec.from_config(cfg0, gpu=device == "cuda")

    if dali_available() and not args.no_dali:
        loader = build_dali_pretrain_loader(spec)
        out["decoder"] = f"DALI ({'mixed/GPU' if device == 'cuda' else 'CPU'})"
    else:
        loader = GPUDecodeLoader(raw, targets, cfg0, args.batch, device)
        out["decoder"] = f"torchvision.io.decode_jpeg(device='{device}') + batch-wise recipe"
    out["data"]["gpu_decode_img_s"] = time_loader(loader, args.data_batches, 2, sync)
    batches = list(zip(range(4), loader))
    batches = [[b[0].to(device), [c.to(device) for c in b[1]], b[2].to(device)]
               for _, b in batches]
    del loader
    if not args.skip_cpu_loader:
        from solo_mixmask.data.loaders import build_pretrain_dataset, build_pretrain_loader

        cpu_loader = build_pretrain_loader(spec, build_pretrain_dataset(spec))
        out["data"]["cpu_loader_img_s"] = time_epochs(cpu_loader, args.data_batches)
        out["data"]["cpu_loader_workers"] = args.workers
        del cpu_loader
    print(f"data: {json.dumps(out['data'])} ({out['decoder']})", flush=True)

    def save() -> None:
        if os.environ.get("OUT"):
            (Path(os.environ["OUT"]) / "gpu_step.json").write_text(json.dumps(out, indent=1))

    # training: the methods as configured, then once more per --also round
    rounds = [[]] + [[o for o in also.split(",") if o] for also in args.also]
    for r, extra in enumerate(rounds):
        reshape_bn = RESHAPE_BN in extra
        overrides = [o for o in extra if o != RESHAPE_BN]
        for method in methods:
            key = f"{method} [{','.join(extra)}]" if extra else method
            try:
                cfg = cfg0 if not extra and method == methods[0] else build_cfg(method, args, root,
                                                                              overrides)
                out["train"][key] = train_speed(cfg, batches, args.steps,
                                                min(args.warmup, max(0, args.steps - 2)), device,
                                                reshape_bn)
            except Exception as err:  # one failing variant (e.g. compile) must not lose the rest
                out["train"][key] = {"error": f"{type(err).__name__}: {err}"[:500],
                                     "step_s": float("nan"), "img_s": float("nan"),
                                     "peak_gib": float("nan")}
            print(f"{key}: {json.dumps(out['train'][key])}", flush=True)
            save()
        if r == 0 and args.profile:  # before the slow rounds (compile), so a time-out keeps it
            table = profile_step(build_cfg(methods[-1], args, root), batches, 3, device)
            out["profile"] = table
            print(f"\nprofile of {methods[-1]}, 3 steps:\n{table}", flush=True)
            save()
    out["total_s"] = time.perf_counter() - t_start

    print(f"\n{out['device']}, {args.arch} {args.size} px, batch {args.batch}, {args.precision}, "
          f"channels_last; decoder: {out['decoder']}")
    print("| what | images/s | peak GPU memory (GiB) |")
    print("|---|---|---|")
    print(f"| data only: {out['decoder']} | {out['data']['gpu_decode_img_s']:.0f} | |")
    if "cpu_loader_img_s" in out["data"]:
        print(f"| data only: CPU loader, {args.workers} workers | "
              f"{out['data']['cpu_loader_img_s']:.0f} | |")
    for method, r in out["train"].items():
        print(f"| training: {method} | {r['img_s']:.0f} | {r['peak_gib']:.1f} |")
    if len(methods) == 2:
        for extra in rounds:
            tag = f" [{','.join(extra)}]" if extra else ""
            a, b = (out["train"][m + tag]["step_s"] for m in methods)
            print(f"| MixMask / vanilla step time{tag} | {b / a:.3f} | |")
    print(f"total {out['total_s']:.0f} s")
    save()
    return 0 if all(math.isfinite(r["step_s"]) for r in out["train"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
