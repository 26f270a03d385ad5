"""Seconds per CIFAR epoch on one GPU: today's loader against the device-resident one, compile off/on.

MoCo v2 and MixMask-MoCo v2 in the paper's CIFAR form (``scripts/pretrain/paper/cifar100/
mocov2plus{,_mixmask}.yaml``: summed symmetric loss, one shared queue, SplitBatchNorm 8 in both
encoders, MoCo v1 head), ResNet-18, batch 512, bf16-mixed, channels_last, on the real CIFAR-10 training
JPEGs standing in for CIFAR-100 (``data.dataset=cifar10``; 100 classes do not change the cost). For
each method, ``data.format`` (``image_folder``: DataLoader workers, one per core but one; ``device``:
uint8 images held on the GPU, crops made there in batches) and ``performance.compile`` (off, on; on
the device path "on" compiles the batched recipe too, ``performance.compile_augmentations``, so the
data share of the compiled variants is the evidence for that key's default), the engine's own
``pretrain()`` runs with a timing callback and reports:

- seconds per 50,000-image epoch (97 steps of 512), scaled from ``--steps`` timed steps;
- the share of the timed window spent on data: the gaps between one step's end (after the module's
  ``on_train_batch_end``, i.e. after the momentum update) and the next step's start (Lightning's
  ``on_train_batch_start``, after the fetch and the host-to-device copy), over the whole window. On a
  GPU the gaps are read from CUDA events on the training stream, so they hold what the GPU spends on
  (or idles for) the data, including the batched crop kernels of the device path that the host only
  queues; the host-side gaps are reported too;
- peak GPU memory (``torch.cuda.max_memory_allocated``; the process's peak RSS on the CPU);
- achieved TFLOP/s and memory traffic of the training step: FLOPs from
  ``torch.utils.flop_counter.FlopCounterMode`` on one eager step (forward, backward, the momentum
  encoder; matmuls and convolutions only), bytes estimated by a dispatch mode that adds the sizes of
  every non-view op's tensor inputs and outputs on the same step (as if each eager kernel read its
  inputs and wrote its outputs once to HBM: no cache reuse, no fusion), and the op count (about the
  kernel launches). Compiled variants take the eager step's FLOPs (same arithmetic); their bytes are
  the eager estimate, an upper bound once kernels are fused.

Timing: every variant first runs ``--warmup`` steps as a separate epoch (cuDNN set-up, compilation,
worker start-up, FLOP count on its last step; then ``--settle-s`` for the batches it prefetched), then
``--steps`` steps of the next epoch, timed from that epoch's start: its iterator begins empty, as at
every real epoch start, so the DataLoader's prefetched batches (workers x prefetch_factor) do not
flatter the window. The scaled epoch is exact when the
loader is the bottleneck; when the step is, it counts the one-off first-batch wait (``first_batch_s``)
97/steps times instead of once. ``--steps 97`` times one whole epoch.

What bounds the step is judged per eager variant against the device's data-sheet peaks (``PEAKS``):
the time its FLOPs would take at the bf16 tensor-core peak, the time its estimated bytes would take
at the HBM peak, and the op count (``us_per_op`` = step time per op); a step far above both peaks is
latency/launch bound, as ResNet-18 at 32 px is expected to be (small 4x4-32x32 maps, SplitBatchNorm's
per-group calls).

Each variant runs in its own process (``--isolate process``, the default: a crash, a CUDA error or a
hung compile costs that variant only, with ``--variant-timeout``); results go to ``OUT/gpu_epoch.json``
after every variant, with the device, torch version and commit, and the variants' logs to
``OUT/gpu_epoch.log`` (two files: what a lent machine returns is limited); each variant's own files
stay in ``--cache``. ``--budget-s`` (480) stops the command at 8 minutes, the eager variants first,
and records what it skipped; ``--variants`` runs a given list (``benchmarks/gpu_window.py`` runs six
in about 3 minutes).

    python benchmarks/gpu_epoch.py --data DIR                 # on a GPU: 8 variants, about 7 min
    python benchmarks/gpu_epoch.py --cpu-smoke --out /tmp/e   # the same code, tiny, on the CPU
    python benchmarks/gpu_epoch.py --device cpu --width 0.25 --batch 128 --per-class 1000 \
        --methods mocov2plus --compile off --warmup 3 --steps 50 --rounds 2 --budget-s 3600  # CPU
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from device_env import REPO, BadInput, bootstrap, commit, data_root, run_main, safe_name

PAPER = REPO / "scripts" / "pretrain" / "paper" / "cifar100"
CONFIGS = {"mocov2plus": "mocov2plus.yaml", "mixmask_mocov2plus": "mocov2plus_mixmask.yaml"}
#: ``device_ahead``: the device path with ``performance.augment_ahead`` (batch b+1's crops on a side
#: stream while batch b trains), measured on request and by the window, against ``device``
FORMATS = ("image_folder", "device", "device_ahead")
DEFAULT_FORMATS = ("image_folder", "device")
EPOCH_IMAGES = 50_000  # CIFAR-10/100 training set
JSON_NAME, LOG_NAME = "gpu_epoch.json", "gpu_epoch.log"

#: Dense bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (TB/s) from NVIDIA's data sheets, by the
#: first matching substring of the device name; used only to say how far from either bound a step is.
PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 4.8),
    ("H100 PCIe", 756.0, 2.0),
    ("H100 NVL", 835.0, 3.9),
    ("H100", 989.0, 3.35),
    ("A100-SXM4-80GB", 312.0, 2.04),
    ("A100", 312.0, 1.56),
)


# ------------------------------------------------------------------------------------ variants
ROUND = ".r"  # a later round's suffix: ``.r2``, ``.r3``... (names stay file-name safe)


def variant_name(method: str, fmt: str, compiled: bool, rnd: str = "") -> str:
    return f"{method}/{fmt}/{'compile' if compiled else 'eager'}{rnd}"


def parse_variant(name: str) -> tuple[str, str, bool, str]:
    """``(method, format, compiled, round suffix)``; the suffix is ``""`` or ``".r2"``, ``".r3"``..."""
    name, mark, rnd = name.partition(ROUND)
    parts = name.split("/")
    if len(parts) != 3 or parts[0] not in CONFIGS or parts[1] not in FORMATS \
            or parts[2] not in ("eager", "compile"):
        raise BadInput(f"variant {name!r}: expected METHOD/FORMAT/eager|compile with METHOD in "
                       f"{list(CONFIGS)} and FORMAT in {list(FORMATS)}")
    return parts[0], parts[1], parts[2] == "compile", mark + rnd


def all_variants(methods: list[str], formats: list[str], compile_modes: list[bool],
                 rounds: int = 1) -> list[str]:
    """Eager variants first (fast, and the ones that matter most), then the compiled ones; with more
    rounds the whole list repeats in alternating order (ABBA), each round's names marked ``.rN``."""
    base = [variant_name(m, f, c) for c in compile_modes for m in methods for f in formats]
    out = []
    for r in range(rounds):
        order = base if r % 2 == 0 else base[::-1]
        out += [name + (f"{ROUND}{r + 1}" if r else "") for name in order]
    return out


def expected_seconds(variants: list[str], args: argparse.Namespace) -> float:
    """A rough duration on an H100/H200 with 16 cores: process start and imports, data set-up, the
    steps, the FLOP-count step, and compilation (the first compile fills inductor's disk cache, the
    later ones mostly hit it)."""
    total, compiled = 20.0, 0  # unpacking 50,000 JPEGs once
    for name in variants:
        method, fmt, comp, _ = parse_variant(name)
        step = 0.045 if method.startswith("mixmask") else 0.03  # the targets: 3.7 s, 2.5 s / epoch
        total += 12 + (6 if fmt == "image_folder" else 4) + (args.warmup + args.steps) * step * 1.5
        total += args.settle_s
        if comp:
            total += 90 if compiled == 0 else 40
            compiled += 1
        else:
            total += 5
    return total


def overrides(args: argparse.Namespace, method: str, fmt: str, compiled: bool, root: Path,
              work: Path) -> list[str]:
    """The paper config as given, except for the data, the run length and what is measured."""
    gpu = args.device == "cuda"
    out = ["data.dataset=cifar10", f"data.train_path={root}", "data.val_path=null",
           f"data.format={'device' if fmt == 'device_ahead' else fmt}",
           f"performance.augment_ahead={str(fmt == 'device_ahead').lower()}",
           f"data.num_workers={args.workers}",
           f"data.device.cache_dir={work / 'resident'}",
           f"optimizer.batch_size={args.batch}", f"accelerator={'gpu' if gpu else 'cpu'}",
           "devices=1", f"precision={args.precision}", "performance.channels_last=true",
           f"performance.compile={str(compiled).lower()}",
           f"performance.compile_augmentations={str(compiled and fmt != 'image_folder').lower()}",
           "max_epochs=2", f"limit_train_batches={max(args.steps, args.warmup)}",
           "knn_eval.enabled=false", "checkpoint.enabled=false", f"checkpoint.dir={work / 'runs'}",
           "auto_resume.enabled=false", "enable_progress_bar=false", "seed=0",
           "log_every_n_steps=1000"]
    if args.width != 1.0:
        out.append(f"backbone.kwargs.width={args.width}")
    return out


# ---------------------------------------------------------------------------- measuring a step
def byte_counter() -> Any:
    """A dispatch mode adding up the tensor bytes every non-view op reads and writes, and the ops."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    skip = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
            "_local_scalar_dense", "record_stream"}

    def nbytes(tree: Any) -> int:
        return sum(t.numel() * t.element_size() for t in tree_leaves(tree)
                   if isinstance(t, torch.Tensor))

    class ByteCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes, self.ops = 0, 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            returns = func._schema.returns
            view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write
                                         for r in returns)
            if not view and func.overloadpacket.__name__ not in skip:
                self.ops += 1
                self.bytes += nbytes((args, kwargs)) + nbytes(out)
            return out

    return ByteCounter()


def epoch_timer(warmup: int, steps: int, cuda: bool, count: bool, settle_s: float) -> Any:
    """The Lightning callback that cuts the warm-up epoch, counts one step and times the next epoch."""
    import lightning.pytorch as pl
    import torch

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.host_start: list[float] = []  # per timed step: Lightning's on_train_batch_start
            self.host_end: list[float] = []  # per timed step: after the module's on_train_batch_end
            self.events: list[tuple[Any, Any]] = []
            self.t0 = self.t_end = math.nan
            self.ev0: Any = None
            self.flops: Optional[int] = None
            self.bytes: Optional[int] = None
            self.ops: Optional[int] = None
            self._modes: list[Any] = []

        def _sync(self) -> None:
            if cuda:
                torch.cuda.synchronize()

        def _event(self) -> Any:
            if not cuda:
                return None
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            # the module's own hooks, wrapped: the warm-up epoch stops at `warmup` steps (-1 is
            # Lightning's "skip the rest of this epoch"), and a step ends after the module's
            # on_train_batch_end (the momentum update), which runs after every callback's
            begin, end = pl_module.on_train_batch_start, pl_module.on_train_batch_end

            def on_start(batch: Any, batch_idx: int, *a: Any, **k: Any) -> Any:
                out = begin(batch, batch_idx, *a, **k)
                if trainer.current_epoch == 0 and batch_idx >= warmup:
                    return -1
                return out

            def on_end(outputs: Any, batch: Any, batch_idx: int, *a: Any, **k: Any) -> None:
                end(outputs, batch, batch_idx, *a, **k)
                self._step_end(trainer, batch_idx)

            pl_module.on_train_batch_start = on_start
            pl_module.on_train_batch_end = on_end

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch == 0:
                # the warm-up epoch stops with prefetched batches in flight; a finished epoch has
                # none, and the next epoch's iterator would first wait for them: let them finish
                time.sleep(settle_s)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch == 1:
                self._sync()
                self.t0 = time.perf_counter()
                self.ev0 = self._event()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.current_epoch == 0 and count and batch_idx == warmup - 1:
                from torch.utils.flop_counter import FlopCounterMode

                self._modes = [FlopCounterMode(display=False), byte_counter()]
                for m in self._modes:
                    m.__enter__()
            elif trainer.current_epoch == 1 and batch_idx < steps:
                self.host_start.append(time.perf_counter())
                self.events.append((self._event(), None))

        def _step_end(self, trainer: Any, batch_idx: int) -> None:
            if self._modes:
                flop_mode, bytes_mode = self._modes
                for m in reversed(self._modes):
                    m.__exit__(None, None, None)
                self._modes = []
                self.flops = int(flop_mode.get_total_flops())
                self.bytes, self.ops = int(bytes_mode.bytes), int(bytes_mode.ops)
            elif trainer.current_epoch == 1 and batch_idx < steps:
                self.events[-1] = (self.events[-1][0], self._event())
                self.host_end.append(time.perf_counter())
                if batch_idx == steps - 1:
                    self._sync()
                    self.t_end = time.perf_counter()

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            for m in reversed(self._modes):  # a failed counted step must not leave a mode behind
                m.__exit__(None, None, None)
            self._modes = []

        def result(self) -> dict[str, Any]:
            n = len(self.host_end)
            if n < steps or not math.isfinite(self.t_end):
                raise RuntimeError(f"only {n} of {steps} timed steps ran: is the data set smaller "
                                   f"than {steps} batches?")
            total = self.t_end - self.t0
            ends = [self.t0] + self.host_end[:-1]
            host_data = sum(s - e for s, e in zip(self.host_start, ends))
            out = {"timed_s": total, "steps": n, "host_data_s": host_data,
                   "first_batch_s": self.host_start[0] - self.t0}
            if cuda:
                prev, gpu_data = self.ev0, 0.0
                for start, stop in self.events:
                    gpu_data += prev.elapsed_time(start) / 1000
                    prev = stop
                out["gpu_data_s"] = gpu_data
                out["gpu_timed_s"] = self.ev0.elapsed_time(self.events[-1][1]) / 1000
            return out

    return EpochTimer()


def run_variant(name: str, args: argparse.Namespace, root: Path, work: Path) -> dict[str, Any]:
    """One variant in this process: the engine's pretrain() with the timing callback."""
    import torch

    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import pretrain

    method, fmt, compiled, _ = parse_variant(name)
    cuda = args.device == "cuda"
    cfg = load_config(str(PAPER), CONFIGS[method], overrides(args, method, fmt, compiled, root, work))
    timer = epoch_timer(args.warmup, args.steps, cuda, count=not compiled, settle_s=args.settle_s)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    original_compile = torch.compile
    if compiled and args.compile_backend != "inductor":  # the smoke run: dynamo's tracing without
        # inductor's minutes of C++ builds on a CPU
        torch.compile = functools.partial(original_compile, backend=args.compile_backend)  # type: ignore
    start = time.perf_counter()
    try:
        result = pretrain(cfg, callbacks=[timer], trainer_kwargs={"enable_model_summary": False})
    finally:
        torch.compile = original_compile  # type: ignore[assignment]
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"method": method, "format": fmt, "compile": compiled,
                           "compile_backend": args.compile_backend if compiled else None,
                           "wall_s": wall, **timer.result()}
    if cuda:
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_mem_source"] = "torch.cuda.max_memory_allocated"
    else:
        import resource

        out["peak_mem_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        out["peak_mem_source"] = "host peak RSS of the process (cumulative without --isolate process)"
    out["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)  # as the run set it, here
    if timer.flops is not None:
        out.update(flops_per_step=timer.flops, bytes_per_step=timer.bytes, ops_per_step=timer.ops)
    out["run_dir"] = str(result.run_dir)
    return out


# ------------------------------------------------------------------------------------ derived
def derive(out: dict[str, Any]) -> None:
    """Per-epoch figures, data shares, TFLOP/s, bandwidth, the bound, and the side-by-side ratios."""
    batch = int(out["settings"]["batch"])
    per_epoch = EPOCH_IMAGES // batch
    peak = next(((f, b) for key, f, b in PEAKS if key in out["device"]), None)
    variants = out["variants"]
    for name, r in variants.items():
        if "timed_s" not in r:
            continue
        step = r["timed_s"] / r["steps"]
        r["step_s"] = step
        r["epoch_s"] = step * per_epoch
        r["images_per_s"] = batch / step
        data_s = r.get("gpu_data_s", r["host_data_s"])
        timed = r.get("gpu_timed_s", r["timed_s"])
        r["data_share"] = data_s / timed if timed > 0 else math.nan
        r["host_data_share"] = r["host_data_s"] / r["timed_s"]
        r["data_share_source"] = ("CUDA events on the training stream" if "gpu_data_s" in r
                                  else "host clock")
        source = r if "flops_per_step" in r else variants.get(name.replace("/compile", "/eager"), {})
        if "flops_per_step" not in source:
            continue
        r["tflops"] = source["flops_per_step"] / step / 1e12
        r["bandwidth_tb_s"] = source["bytes_per_step"] / step / 1e12
        r["intensity_flop_per_byte"] = source["flops_per_step"] / max(1, source["bytes_per_step"])
        r["us_per_op"] = (step - data_s / r["steps"]) / max(1, source["ops_per_step"]) * 1e6
        if peak is not None:
            t_flop = source["flops_per_step"] / (peak[0] * 1e12)
            t_byte = source["bytes_per_step"] / (peak[1] * 1e12)
            r["peak_flops_share"] = r["tflops"] / peak[0]
            r["peak_bandwidth_share"] = r["bandwidth_tb_s"] / peak[1]
            compute = step - data_s / r["steps"]
            if compute > 3 * max(t_flop, t_byte):
                r["bound"] = (f"neither FLOPs ({t_flop * 1e3:.1f} ms at peak) nor bytes "
                              f"({t_byte * 1e3:.1f} ms at peak) of a {compute * 1e3:.1f} ms step: "
                              f"latency/launch bound ({source['ops_per_step']} ops, "
                              f"{r['us_per_op']:.1f} us each)")
            else:
                r["bound"] = "memory bandwidth" if t_byte > t_flop else "compute"
    # side-by-side ratios within each round; with several rounds, the median of the rounds' ratios
    per_round: dict[str, list[float]] = {}

    def pair(key: str, num: dict[str, Any], den: dict[str, Any]) -> None:
        if "epoch_s" in num and "epoch_s" in den:
            per_round.setdefault(key, []).append(num["epoch_s"] / den["epoch_s"])

    for name, r in variants.items():
        method, fmt, comp, rnd = parse_variant(name)
        mode = "compile" if comp else "eager"
        if fmt == "device":
            pair(f"{method}/{mode}: image_folder / device",
                 variants.get(variant_name(method, "image_folder", comp, rnd), {}), r)
        if fmt == "device_ahead":
            pair(f"{method}/{mode}: device / device_ahead",
                 variants.get(variant_name(method, "device", comp, rnd), {}), r)
        if comp:
            pair(f"{method}/{fmt}: eager / compile",
                 variants.get(variant_name(method, fmt, False, rnd), {}), r)
        if method.startswith("mixmask_"):
            pair(f"{fmt}/{mode}: MixMask / vanilla", r,
                 variants.get(variant_name(method[len("mixmask_"):], fmt, comp, rnd), {}))
    out["ratios"] = {k: statistics.median(v) for k, v in per_round.items()}
    if any(len(v) > 1 for v in per_round.values()):
        out["ratios_per_round"] = per_round


def table(out: dict[str, Any]) -> str:
    rows = ["| method | data.format | compile | s / epoch | step (ms) | data share | peak mem (GiB) "
            "| TFLOP/s | TB/s (est.) |", "|---|---|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    for name, r in out["variants"].items():
        method, fmt, comp, rnd = parse_variant(name)
        method += rnd
        if "error" in r:
            rows.append(f"| {method} | {fmt} | {'on' if comp else 'off'} | failed: "
                        f"{r['error'].splitlines()[0][:80]} | | | | | |")
            continue
        share = r.get("data_share", math.nan) * 100
        rows.append(f"| {method} | {fmt} | {'on' if comp else 'off'} | {f(r.get('epoch_s'), '.2f')} | "
                    f"{f(r.get('step_s', math.nan) * 1e3, '.1f')} | {f(share, '.1f')}% | "
                    f"{f(r.get('peak_mem_gib'), '.2f')} | {f(r.get('tflops'), '.3g')} | "
                    f"{f(r.get('bandwidth_tb_s'), '.3g')} |")
    return "\n".join(rows)


def save(out: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- driver
def prepare_data(args: argparse.Namespace) -> Path:
    from solo_mixmask.data.npz import unpack_npz

    npz = data_root(args.data) / "cifar10-jpeg" / "train.npz"
    tag = f"{args.per_class}pc" if args.per_class else "all"
    return unpack_npz(npz, args.cache / f"cifar10-train-{tag}", args.per_class)


def run_child(name: str, args: argparse.Namespace, argv: list[str], logs: Path, combined: Path,
              timeout: float) -> dict[str, Any]:
    """One variant in a fresh process, so a crash, a CUDA error or a hang costs that variant only.
    Its JSON and log stay in ``logs`` (the work folder); the log is appended to ``combined``."""
    logs.mkdir(parents=True, exist_ok=True)
    result = logs / (safe_name(name) + ".json")
    log = logs / (safe_name(name) + ".log")
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--isolate", "none",
           "--child", name, "--child-out", str(result)]
    with open(log, "w") as fh:
        # its own process group: a stopped variant takes its DataLoader workers and inductor's
        # compile workers with it
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: Any = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = f"stopped after {timeout:.0f} s (--variant-timeout / --budget-s)"
    text = log.read_text(errors="replace")
    with open(combined, "a") as fh:
        fh.write(f"===== {name} ({code if isinstance(code, int) else 'stopped'})\n{text}\n")
    if result.is_file():
        return json.loads(result.read_text())
    tail = text.strip().splitlines()[-15:]
    why = f"exit {code}" if isinstance(code, int) else code
    return {"error": f"{why}: " + "\n".join(tail), "log": combined.name}


def main(argv: Optional[list[str]] = None) -> int:
    t_launch = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_epoch_out"),
                    help="folder for gpu_epoch.json and gpu_epoch.log (default: $OUT, else "
                    "./gpu_epoch_out)")
    ap.add_argument("--data", type=Path, default=None,
                    help="the shared data folder holding cifar10-jpeg/train.npz (default: found)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "solo-mixmask-bench",
                    help="where the JPEG tree, the resident cache and the run folders go")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="the same code on the CPU, tiny: the defaults become --device cpu "
                    "--per-class 16 --width 0.125 --batch 32 --warmup 1 --steps 2 --isolate none "
                    "--compile-backend eager (dynamo's tracing without inductor's C++ builds)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None,
                    help="cuda (default), or cpu for the CPU comparison of the data paths")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 30)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5)")
    ap.add_argument("--batch", type=int, default=None, help="default 512")
    ap.add_argument("--width", type=float, default=None, help="ResNet-18 width (default 1)")
    ap.add_argument("--per-class", type=int, default=None,
                    help="the first N training images per class (default: all 5,000)")
    ap.add_argument("--precision", default=None, help="default bf16-mixed on cuda, 32 on cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the variants in alternating order (ABBA); ratios are the median "
                    "of the rounds' ratios")
    ap.add_argument("--settle-s", type=float, default=None,
                    help="pause after the warm-up epoch so its prefetched batches finish (default 2; "
                    "0.2 with --cpu-smoke)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; eager with --cpu-smoke)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="DataLoader workers of the image_folder path (default: cores - 1)")
    ap.add_argument("--methods", default=",".join(CONFIGS))
    ap.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                    help=f"of {', '.join(FORMATS)}")
    ap.add_argument("--compile", default="off,on", help="off, on or off,on")
    ap.add_argument("--isolate", choices=("process", "none"), default=None,
                    help="one process per variant (default on a GPU) or all in this one (default "
                    "with --cpu-smoke)")
    ap.add_argument("--variants", default=None,
                    help="these variants, in this order (METHOD/FORMAT/eager|compile, comma-"
                    "separated), instead of --methods x --formats x --compile")
    ap.add_argument("--variant-timeout", type=float, default=300.0,
                    help="seconds before an isolated variant is stopped")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="the whole command's limit: an isolated variant is stopped when it would "
                    "run past it, and the variants left are recorded as skipped (default 8 min)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke

    def default(key: str, smoke_value: Any, value: Any) -> None:
        if getattr(args, key) is None:
            setattr(args, key, smoke_value if smoke else value)

    default("device", "cpu", "cuda")
    cpu = args.device == "cpu"
    default("steps", 2, 30)
    default("warmup", 1, 5)
    default("batch", 32, 512)
    default("width", 0.125, 1.0)
    default("per_class", 16, None)
    default("isolate", "none", "process")
    default("compile_backend", "eager", "inductor")
    default("settle_s", 0.2, 2.0)
    default("precision", "32", "32" if cpu else "bf16-mixed")
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1 or args.batch % 8:
        raise BadInput("--steps, --warmup and --rounds must be positive and --batch a multiple "
                       "of 8 (SplitBatchNorm 8)")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in CONFIGS]
    if unknown:
        raise BadInput(f"unknown method(s) {unknown}: {list(CONFIGS)}")
    bad = [c for c in args.compile.split(",") if c not in ("off", "on")]
    if bad:
        raise BadInput(f"--compile {args.compile}: off, on or off,on")
    modes = [c == "on" for c in args.compile.split(",")]
    if args.variants:
        variants = [v for v in args.variants.split(",") if v]
        for v in variants:
            parse_variant(v)
    else:
        variants = all_variants(methods, [f for f in args.formats.split(",") if f], modes,
                                args.rounds)

    import warnings

    warnings.filterwarnings("ignore")
    bootstrap()
    import torch

    if not cpu and not torch.cuda.is_available():
        raise BadInput("no CUDA device: run with --cpu-smoke for the CPU smoke run")
    if cpu:  # small ops on a shared CPU stall in OpenMP barriers with more threads than free cores
        torch.set_num_threads(args.threads)
    work = args.cache / ("gpu-epoch-cpu" if cpu else "gpu-epoch")
    root = prepare_data(args)

    if args.child:  # one variant, written where the parent reads it
        try:
            res = run_variant(args.child, args, root, work)
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            res = {"error": f"{type(err).__name__}: {err}"[:2000], "traceback": traceback.format_exc()}
        args.child_out.write_text(json.dumps(res, default=str))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / JSON_NAME
    combined = args.out / LOG_NAME
    combined.unlink(missing_ok=True)
    expected = expected_seconds(variants, args)
    out: dict[str, Any] = {
        "device": f"cpu ({platform.machine()})" if cpu else torch.cuda.get_device_name(0),
        "torch": torch.__version__, "commit": commit(), "host": platform.node(),
        "host_cores": os.cpu_count(), "command": " ".join(["python benchmarks/gpu_epoch.py", *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {"configs": f"{PAPER.relative_to(REPO)}/{{{','.join(CONFIGS.values())}}}",
                     "dataset": "cifar10 (real JPEGs, standing in for CIFAR-100)",
                     "train_images": sum(1 for _ in root.rglob("*.jpg")), "batch": args.batch,
                     "precision": args.precision, "channels_last": True,
                     "backbone": f"resnet18 width {args.width}, CIFAR stem",
                     "warmup_steps": args.warmup, "timed_steps": args.steps,
                     "epoch_images": EPOCH_IMAGES, "steps_per_epoch": EPOCH_IMAGES // args.batch,
                     "image_folder_workers": args.workers, "isolate": args.isolate},
        "expected_s": round(expected), "variants": {}}
    if cpu:
        out["settings"]["torch_threads"] = torch.get_num_threads()
    else:
        out["device_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    print(f"# {out['device']}, torch {out['torch']}, commit {out['commit']}; {len(variants)} variants"
          + ("" if cpu else f", expected about {expected / 60:.1f} min on an H100/H200"), flush=True)
    save(out, path)
    start = time.perf_counter()
    for name in variants:
        t = time.perf_counter()
        left = args.budget_s - (t - t_launch)
        if left < 30:
            res = {"error": f"skipped: {args.budget_s:.0f} s budget spent (--budget-s)"}
        elif args.isolate == "process":
            res = run_child(name, args, argv, work / "logs", combined,
                            min(args.variant_timeout, left))
        else:
            try:
                res = run_variant(name, args, root, work)
            except Exception as err:  # noqa: BLE001 - one failing variant must not lose the others
                res = {"error": f"{type(err).__name__}: {err}"[:2000],
                       "traceback": traceback.format_exc()}
        res["variant_s"] = time.perf_counter() - t
        out["variants"][name] = res
        derive(out)
        out["total_s"] = time.perf_counter() - start
        save(out, path)
        r = out["variants"][name]
        if "error" in r:
            print(f"{name}: FAILED {r['error'].splitlines()[0][:300]}", flush=True)
        else:
            print(f"{name}: {r['epoch_s']:.2f} s/epoch, step {r['step_s'] * 1e3:.1f} ms, data "
                  f"{r['data_share'] * 100:.1f}%, peak {r['peak_mem_gib']:.2f} GiB "
                  f"({r['variant_s']:.0f} s)", flush=True)
    print(f"\n{out['device']}, batch {args.batch}, {args.precision}, channels_last; epoch = "
          f"{EPOCH_IMAGES // args.batch} steps, scaled from {args.steps} timed steps\n{table(out)}")
    for k, v in out["ratios"].items():
        print(f"{k}: {v:.2f}")
    for name, r in out["variants"].items():
        if r.get("bound"):
            print(f"{name}: {r['bound']}")
    print(f"total {out['total_s']:.0f} s (expected {expected:.0f} s); JSON: {path}")
    return 0 if all("error" not in r for r in out["variants"].values()) else 1


if __name__ == "__main__":
    run_main(main)
