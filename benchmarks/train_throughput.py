"""Training-step throughput per method on the CPU, the engine's overhead over the backbone, the cost
of MixMask over its base method, the cost of mask generation + mixing, and the data loader's speed
next to the training step's.

Setup (close to ../shared/peers/solo-learn-cpu.md so the figures compare):
- Configs: the project's own ``scripts/pretrain/cifar/{method}.yaml`` and ``{method}_mixmask.yaml``
  with ``optimizer.batch_size`` 128 (lr scaled by 128/256), CIFAR-10, fp32, accelerator cpu, resnet18
  with the CIFAR stem at width 0.25 and 1.
- Batches: 3 fixed batches ``[idx, [x1, x2], y]`` of real CIFAR-10 crops, made beforehand by the
  engine's own torchvision loader, cycled; data loading is excluded.
- One step: ``training_step`` (every forward, the loss, MixMask's branch, MoCo's queue), zero_grad
  (set to none), backward, the optimizer and scheduler built by ``configure_optimizers``, then
  ``on_train_batch_end`` (the EMA update). A stand-in trainer gives ``global_step`` and
  ``estimated_stepping_batches``, with ``barebones`` set so ``self.log`` is a no-op as under
  Lightning's barebones mode.
- Bare backbone: every backbone call of one recorded ``training_step`` (online and momentum backbone,
  MixMask's mixed batch, MoCo's shuffled keys), replayed on the same tensors with the same modules,
  grad-enabled calls then given a fixed dense random upstream gradient and one backward pass. No
  projector, predictor, loss, classifier, optimizer or EMA. ``bare (online)`` replays only the
  grad-enabled calls: with two crops that is solo-learn's reference "bare backbone" (measured below
  width 1 only, to keep the run short).
- Overhead = (full - bare) / full per round, median over rounds. Rounds interleave the full step (A),
  the bare backbone (B) and, below width 1, the bare online backbone (C): ABCCBA then CBAABC; at
  width 1 ABBA then BAAB.
- MixMask cost: median step time of ``mixmask_X`` / ``X`` against the nominal count ratio (a forward
  counts 1, a forward+backward 3, per image) and against the measured bare-backbone ratio.
- Mask generation + mixing: ``sample_masks`` + ``permutation`` + ``mix`` with the config's settings at
  batch 512 / 32 px, against a MixMask-MoCo step at batch 512 (width 0.25: the worst case).

    python benchmarks/train_throughput.py                     # the default run (about 10 min)
    python benchmarks/train_throughput.py --widths 0.25 --pairs 2 --methods simclr,mixmask_simclr
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ["mocov2plus", "byol", "simclr", "simsiam"]


class StandInTrainer:
    """What a method reads from its trainer during a step."""

    barebones = True
    sanity_checking = False
    current_epoch = 0
    world_size = 1
    global_rank = 0

    def __init__(self, steps: int) -> None:
        self.global_step = 0
        self.estimated_stepping_batches = steps


def build_cfg(method: str, width: float, batch: int, data_root: str, channels_last: bool) -> Any:
    from solo_mixmask.config.loading import load_config
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    base = method.removeprefix("mixmask_")
    name = f"{base}_mixmask" if method.startswith("mixmask_") else base
    overrides = [f"optimizer.batch_size={batch}", "data.dataset=cifar10",
                 f"data.train_path={data_root}", "data.val_path=null", "accelerator=cpu",
                 "devices=1", "precision=32", f"+backbone.kwargs.width={width}",
                 f"+performance.channels_last={str(channels_last).lower()}",
                 "knn_eval.enabled=false", "checkpoint.enabled=false", "auto_resume.enabled=false"]
    cfg = load_config(str(REPO / "scripts" / "pretrain" / "cifar"), name, overrides)
    return parse_pretrain_cfg(cfg)


def make_batches(cfg: Any, count: int, workers: int = 2) -> list[list[Any]]:
    from solo_mixmask.data.loaders import build_pretrain_dataset, build_pretrain_loader
    from solo_mixmask.data.spec import LoaderSpec

    torch.manual_seed(0)
    spec = LoaderSpec.from_config(cfg, gpu=False)
    loader = build_pretrain_loader(spec, build_pretrain_dataset(spec))
    batches = list(itertools.islice(iter(loader), count))
    del loader
    return batches


class Runner:
    """One method's model, optimizer and scheduler, stepped exactly as the engine steps them."""

    def __init__(self, cfg: Any, batches: list[list[Any]]) -> None:
        from solo_mixmask.methods import METHODS as REGISTRY

        torch.manual_seed(0)
        self.cfg = cfg
        self.model = REGISTRY[cfg.method](cfg)
        if self.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.trainer = StandInTrainer(steps=int(cfg.max_epochs) * 390)
        self.model._trainer = self.trainer  # type: ignore[assignment]
        conf = self.model.configure_optimizers()
        if isinstance(conf, dict):
            self.opt, self.sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        else:
            self.opt, self.sched = conf, None
        self.model.on_train_start()
        self.batches = batches
        self.i = 0
        self.calls: list[tuple[torch.nn.Module, torch.Tensor, bool]] = []
        self.grads: list[torch.Tensor] = []

    def step(self) -> None:
        m, batch = self.model, self.batches[self.i % len(self.batches)]
        loss = m.training_step(batch, self.i)
        m.optimizer_zero_grad(0, self.i, self.opt)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.trainer.global_step += 1
        m.on_train_batch_end(None, batch, self.i)
        self.i += 1

    def record_backbone_calls(self) -> None:
        """Runs one step with hooks on the backbones: the inputs of every backbone call."""
        backbones = [self.model.backbone]
        if hasattr(self.model, "momentum_backbone"):
            backbones.append(self.model.momentum_backbone)
        calls: list[tuple[torch.nn.Module, torch.Tensor, bool]] = []
        hooks = [b.register_forward_hook(
            lambda mod, inp, out: calls.append((mod, inp[0].detach(), torch.is_grad_enabled())))
            for b in backbones]
        try:
            self.step()
        finally:
            for h in hooks:
                h.remove()
        self.calls = calls
        g = torch.Generator().manual_seed(1)
        self.grads = [torch.randn(len(x), self.model.features_dim, generator=g)
                      for _, x, grad in calls if grad]

    def bare(self, online_only: bool = False) -> None:
        outs = []
        for mod, x, grad in self.calls:
            if grad:
                outs.append(mod(x))
            elif not online_only:
                with torch.no_grad():
                    mod(x)
        torch.autograd.backward(outs, self.grads[:len(outs)])
        self.model.zero_grad(set_to_none=True)

    def units(self) -> int:
        """Nominal backbone cost of a step: images x (3 with a backward, else 1)."""
        return sum(len(x) * (3 if grad else 1) for _, x, grad in self.calls)


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_method(cfg: Any, batches: list[list[Any]], pairs: int, warmup: int,
                 online: bool) -> dict:
    """Rounds of full step (A) and bare backbone (B), and with ``online`` the bare online backbone
    (C): ABCCBA / CBAABC, else ABBA / BAAB. The step that records the backbone calls warms up."""
    run = Runner(cfg, batches)
    for _ in range(warmup):
        run.step()
    run.record_backbone_calls()
    run.bare()
    fns = {"A": run.step, "B": run.bare, "C": lambda: run.bare(online_only=True)}
    full, bare, bare_online = [], [], []
    for p in range(pairs):
        order = ("ABCCBA" if p % 2 == 0 else "CBAABC") if online else (
            "ABBA" if p % 2 == 0 else "BAAB")
        got: dict[str, list[float]] = {"A": [], "B": [], "C": []}
        for k in order:
            got[k].append(timed(fns[k]))
        full.append(statistics.mean(got["A"]))
        bare.append(statistics.mean(got["B"]))
        if online:
            bare_online.append(statistics.mean(got["C"]))
    return {"full": full, "bare": bare, "bare_online": bare_online,
            "overhead": [(f - b) / f for f, b in zip(full, bare)],
            "full_over_online": [f / o for f, o in zip(full, bare_online)],
            "units": run.units(), "batch": len(batches[0][0])}


def mask_share(cfg: Any, batch: Any, steps: int) -> dict:
    """Mask generation + mixing time against one MixMask step, both at ``len(batch)``."""
    from solo_mixmask.mixmask import mix, permutation, sample_masks

    run = Runner(cfg, [batch])
    run.step()
    step = statistics.median(timed(run.step) for _ in range(steps))
    c = run.model.branches.cfg
    x = batch[1][0]
    rng = np.random.default_rng(0)

    def masks_and_mix() -> None:
        mask, _ = sample_masks(c.pattern, c.grid, c.ratio, tuple(x.shape[-2:]), len(x),
                               c.per_sample, rng, x.device)
        mix(x, mask, permutation(len(x), c.permutation, rng, x.device))

    for _ in range(5):
        masks_and_mix()
    reps = [timed(masks_and_mix) for _ in range(50)]
    return {"step_s": step, "mask_mix_s": statistics.median(reps),
            "share": statistics.median(reps) / step, "pattern": c.pattern, "grid": c.grid,
            "per_sample": c.per_sample}


def loader_speed(cfg: Any, fmt: str, workers: int, batches: int = 20, skip: int = 3) -> float:
    """Images/s of the pretraining loader (``fmt``: image_folder or dali) with ``workers``."""
    from omegaconf import OmegaConf

    from solo_mixmask.engine.pretrain import prepare

    c = OmegaConf.merge(cfg, {"data": {"format": fmt, "num_workers": workers},
                              "dali": {"device": "cpu", "threads": workers}})
    loader = prepare(c)[1].train
    it = iter(loader)
    for _ in range(skip):
        next(it)
    t = time.perf_counter()
    n = sum(len(next(it)[0]) for _ in range(batches))
    return n / (time.perf_counter() - t)


def end_to_end(cfg: Any, workers: int, steps: int = 12, skip: int = 3) -> float:
    """Training images/s with the torchvision loader in the loop (both share the CPUs)."""
    from solo_mixmask.engine.pretrain import prepare

    c = cfg.copy()
    c.data.num_workers = workers
    loader = prepare(c)[1].train
    it = iter(loader)
    run = Runner(c, [next(it)])
    for _ in range(skip):
        run.batches = [next(it)]
        run.step()
    t = time.perf_counter()
    n = 0
    for _ in range(steps):
        run.batches = [next(it)]
        run.i = 0
        run.step()
        n += len(run.batches[0][0])
    return n / (time.perf_counter() - t)


def _med(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/solo-mixmask-bench"))
    ap.add_argument("--methods", default=",".join(METHODS + [f"mixmask_{m}" for m in METHODS]))
    ap.add_argument("--widths", default="0.25,1")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=2, help="ABCCBA rounds at width < 1")
    ap.add_argument("--pairs-1x", type=int, default=1, help="ABBA rounds at width 1")
    ap.add_argument("--warmup", type=int, default=2, help="extra warm-up steps at width < 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-channels-last", action="store_true",
                    help="contiguous NCHW instead of the engine's default channels_last")
    ap.add_argument("--skip-loader", action="store_true")
    ap.add_argument("--skip-masks", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from solo_mixmask.data.npz import shared_data_dir, unpack_npz

    data = args.data or shared_data_dir()
    if data is None:
        print("no shared data folder found: pass --data", file=sys.stderr)
        return 2
    root = unpack_npz(Path(data) / "cifar10-jpeg" / "train.npz", args.cache / "cifar-1000pc",
                      per_class=1000)
    methods = args.methods.split(",")
    widths = [float(w) for w in args.widths.split(",")]
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}, batch {args.batch}, "
          f"channels_last {not args.no_channels_last}")

    results: dict[str, Any] = {"steps": {}, "args": {k: str(v) for k, v in vars(args).items()}}
    batches = make_batches(build_cfg(methods[0], widths[0], args.batch, str(root),
                                     not args.no_channels_last), 3)
    for width in widths:
        pairs = args.pairs if width < 1 else args.pairs_1x
        for method in methods:
            cfg = build_cfg(method, width, args.batch, str(root), not args.no_channels_last)
            r = bench_method(cfg, batches, pairs, args.warmup if width < 1 else 0, width < 1)
            r.update(method=method, width=width, load=os.getloadavg()[0])
            results["steps"][f"{method}@{width}"] = r
            print(f"  w={width:<4} {method:20s} step {_med(r['full']):6.3f} s  "
                  f"{args.batch / _med(r['full']):7.1f} img/s  bare {_med(r['bare']):6.3f} s  "
                  f"overhead {100 * _med(r['overhead']):5.1f}%  full/online "
                  f"{_med(r['full_over_online'] or [float('nan')]):.2f}", flush=True)

    if not args.skip_loader and 0.25 in widths:
        cfg = build_cfg("mocov2plus", 0.25, args.batch, str(root), not args.no_channels_last)
        results["loader"] = {
            "torchvision_nw2": loader_speed(cfg, "image_folder", 2),
            "end_to_end_nw2": end_to_end(cfg, 2),
        }
        from solo_mixmask.data.dali import dali_available

        if dali_available():
            results["loader"]["dali_t2"] = loader_speed(cfg, "dali", 2)
        print(f"  loader {json.dumps({k: round(v, 1) for k, v in results['loader'].items()})}",
              flush=True)

    if not args.skip_masks:
        cfg = build_cfg("mixmask_mocov2plus", 0.25, 512, str(root), not args.no_channels_last)
        big = make_batches(cfg, 1)[0]
        results["masks"] = mask_share(cfg, big, steps=2)
        print(f"  masks {results['masks']}", flush=True)

    # ------------------------------------------------------------------------------ the tables
    steps = results["steps"]
    print("\n| width | method | step (s) median [min-max] | train img/s | bare backbone (s) | "
          "engine overhead, paired median [min-max] | full / bare online |")
    print("|---|---|---|---|---|---|---|")
    for r in steps.values():
        f, o = r["full"], r["overhead"]
        print(f"| {r['width']} | {r['method']} | {_med(f):.3f} [{min(f):.3f}-{max(f):.3f}] | "
              f"{r['batch'] / _med(f):.1f} | {_med(r['bare']):.3f} | "
              f"{100 * _med(o):.1f}% [{100 * min(o):.1f}-{100 * max(o):.1f}] | "
              f"{_med(r['full_over_online'] or [float('nan')]):.2f} |")
    print("\n| width | method | MixMask / vanilla step | nominal fwd+bwd ratio | bare-backbone "
          "ratio | step ratio / nominal |")
    print("|---|---|---|---|---|---|")
    for width in widths:
        for m in METHODS:
            a, b = steps.get(f"mixmask_{m}@{width}"), steps.get(f"{m}@{width}")
            if a and b:
                step = _med(a["full"]) / _med(b["full"])
                nominal = a["units"] / b["units"]
                bare = _med(a["bare"]) / _med(b["bare"])
                print(f"| {width} | {m} | {step:.3f} | {nominal:.3f} | {bare:.3f} | "
                      f"{step / nominal:.3f} |")
    if "loader" in results:
        train = {r["method"]: r["batch"] / _med(r["full"]) for r in steps.values()
                 if r["width"] == 0.25}
        print(f"\nloader (0.25x, 32 px, batch {args.batch}): "
              + ", ".join(f"{k} {v:.0f} img/s" for k, v in results["loader"].items())
              + "; training steps: " + ", ".join(f"{k} {v:.0f}" for k, v in train.items()))
    if "masks" in results:
        mk = results["masks"]
        print(f"mask generation + mixing at batch 512 / 32 px: {1e3 * mk['mask_mix_s']:.2f} ms "
              f"= {100 * mk['share']:.3f}% of a {mk['step_s']:.2f} s MixMask-MoCo step (0.25x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
