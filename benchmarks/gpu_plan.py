"""The GPU evidence plan, cell by cell (benchmarks/gpu_plan.yaml).

    python benchmarks/gpu_plan.py status                      # which cells have records
    python benchmarks/gpu_plan.py calibrate --out DIR         # time the slowest cell, propose E
    python benchmarks/gpu_plan.py next --out DIR [--epochs E] # run the first cell without a record
    python benchmarks/gpu_plan.py next --out DIR --cpu-smoke  # the same code, tiny, on the CPU

A GPU window runs these through ``benchmarks/gpu_window.py``, which calibrates when the plan's
``epochs`` is not fixed and then runs open cells until its budget ends. Each cell is a complete
pretraining run on all 50,000 CIFAR-10 training images in the paper's protocol at the plan's common
epoch budget E, ending with KNN on the 10,000 test images and W-MSE's linear probe on precomputed
features when time is left. ``next`` writes into ``--out`` the result records (JSON),
``runs/<cell>/args.json`` and ``runs/<cell>/metrics.csv``, and ``summary-<cell>.json`` (device,
commit, protocol, wall time, seconds per epoch; ``complete: false`` with a ``reason`` whenever the cell
stops early, written before it starts so that even a killed cell leaves one), never a checkpoint. A
cell is done when its complete summary is in the plan's records folder (docs/results/gpu-cifar10).
A time limit (``--limit-s``; the plan's window by default) stops a cell at an epoch end, or mid-epoch
at the very end, with a checkpoint and a KNN at the stopping point. ``--data`` is the folder holding
cifar10-jpeg/ (default: ``$SOLO_MIXMASK_DATA``, the carried ``.device/data``, ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from device_env import REPO, BadInput, bootstrap, commit, data_root, run_main

if TYPE_CHECKING:
    from omegaconf import DictConfig

PLAN = REPO / "benchmarks" / "gpu_plan.yaml"
PAPER = REPO / "scripts" / "pretrain" / "paper" / "cifar100"
SLOWEST = "moco-mixmask_star-s0"  # two extra forward passes per step
MARGIN_S = 30.0  # kept free in a window beyond a cell's measured cost
SMOKE_PROBE_EPOCHS, PROBE_EPOCHS = 3, 100
PROBE_RESERVE_S, SMOKE_PROBE_RESERVE_S = 90.0, 5.0  # the probe runs only with this much time left


def load_plan(path: Path = PLAN) -> DictConfig:
    from omegaconf import OmegaConf

    if not Path(path).is_file():
        raise BadInput(f"plan {path} not found")
    try:
        plan = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - a YAML error names the line
        raise BadInput(f"plan {path}: {str(exc).splitlines()[0]}") from None
    ids = [c.id for c in plan.get("cells") or []]
    if not ids or len(set(ids)) != len(ids):
        raise BadInput(f"plan {path}: no cells, or cell ids repeat")
    return plan


def records_dir(plan: DictConfig, args: argparse.Namespace) -> Path:
    return Path(args.records) if getattr(args, "records", None) else REPO / str(plan.records)


def done(plan: DictConfig, records: Optional[Path] = None) -> set[str]:
    """Cells whose complete summary is in the records folder."""
    folder = records or REPO / str(plan.records)
    out = set()
    for path in folder.glob("summary-*.json"):
        summary = json.loads(path.read_text())
        if summary.get("complete"):
            out.add(summary["cell"])
    return out


def find_cell(plan: DictConfig, cell_id: str) -> DictConfig:
    for cell in plan.cells:
        if cell.id == cell_id:
            return cell
    raise BadInput(f"no cell {cell_id!r} in the plan; cells: {', '.join(c.id for c in plan.cells)}")


def cell_epochs(plan: DictConfig, cell: DictConfig, epochs: int) -> int:
    """The cell's epochs at the common budget E (``epochs_factor`` for the equal-compute cells)."""
    return max(1, round(int(epochs) * float(cell.get("epochs_factor", 1.0))))


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    path = out / f"summary-{summary['cell']}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------- data
def prepare_data(args: argparse.Namespace) -> tuple[Path, Path]:
    from solo_mixmask.data.npz import unpack_npz

    root = data_root(args.data)
    per_class = 5 if args.cpu_smoke else None
    tag = "smoke" if args.cpu_smoke else "all"
    work = Path(args.work)
    train = unpack_npz(root / "cifar10-jpeg" / "train.npz", work / f"cifar10-train-{tag}", per_class)
    test = unpack_npz(root / "cifar10-jpeg" / "test.npz", work / f"cifar10-test-{tag}", per_class)
    return train, test


def knn_frequency(epochs: int) -> int:
    """The largest divisor of ``epochs`` up to a tenth of it: KNN about ten times, and at the end."""
    return max(d for d in range(1, max(1, epochs // 10) + 1) if epochs % d == 0)


def engine_overrides(plan: DictConfig, cell: DictConfig, epochs: int, train: Path, test: Path,
                     args: argparse.Namespace) -> list[str]:
    schedule = int(cell.get("schedule_epochs") or epochs)
    out = [f"data.train_path={train}", f"data.val_path={test}", "data.dataset=cifar10",
           f"data.format={plan.data.format}", f"max_epochs={schedule}",
           f"seed={int(cell.get('seed', 0))}", f"checkpoint.dir={Path(args.work) / 'runs' / cell.id}",
           f"checkpoint.frequency={epochs}",  # one, at the end, in the work folder (never --out)
           "auto_resume.enabled=false", "enable_progress_bar=false",
           f"knn_eval.frequency={knn_frequency(epochs)}",
           f"data.device.cache_dir={Path(args.work) / 'cache'}",
           f"data.num_workers={max(1, (os.cpu_count() or 2) - 1)}"]
    if args.cpu_smoke:
        out += ["accelerator=cpu", "precision=32", "optimizer.batch_size=16",
                "limit_train_batches=2", "backbone.kwargs.width=0.125", "knn_eval.k=20"]
        if "mocov2plus" in str(cell.get("config") or cell.get("solo_config")):
            out.append("method_kwargs.queue_size=256")
    else:
        out += [f"optimizer.batch_size={plan.batch_size}", f"precision={plan.precision}",
                "accelerator=gpu"]
    return out + list(cell.get("overrides") or [])


# ------------------------------------------------------------------------------------- cells
def clock(epochs: int, deadline: float, start: float) -> Any:
    """The callback that ends a run at the plan's budget (a longer schedule's first ``epochs``) or
    before ``deadline``: at an epoch end when the next epoch would not fit with a minute for the
    evaluation, mid-epoch in the last 45 s; an early stop saves a checkpoint and runs the KNN
    monitor at the stopping point (the records need both)."""
    from lightning.pytorch.callbacks import Callback

    from solo_mixmask.engine.checkpoint import Checkpointer
    from solo_mixmask.engine.monitors import KNNMonitor

    class Clock(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.stopped: Optional[str] = None
            self.mid_epoch = False

        def _stop_early(self, trainer: Any, pl_module: Any, why: str, evaluate: bool) -> None:
            self.stopped = why
            trainer.should_stop = True
            for cb in trainer.callbacks:
                if isinstance(cb, KNNMonitor) and evaluate:
                    top1, top5 = cb.evaluate(pl_module)
                    pl_module.log_dict({"val_knn_acc1": top1, "val_knn_acc5": top5}, on_epoch=True)
                if isinstance(cb, Checkpointer):
                    cb.save(trainer, interrupted=self.mid_epoch)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if self.stopped is None and time.time() > deadline - 45:
                self.mid_epoch = True
                self._stop_early(trainer, pl_module, f"time limit in epoch "
                                 f"{trainer.current_epoch + 1} of {epochs}", evaluate=True)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if self.mid_epoch:
                return  # an epoch cut short is not counted
            self.ends.append(time.time())
            done_epochs = trainer.current_epoch + 1
            last = self.ends[-1] - (self.ends[-2] if len(self.ends) > 1 else start)
            if done_epochs >= epochs:
                trainer.should_stop = True
            elif self.stopped is None and time.time() + 1.5 * last > deadline - 60:
                monitor_ran = done_epochs % knn_frequency(epochs) == 0
                self._stop_early(trainer, pl_module, f"time limit after epoch {done_epochs} of "
                                 f"{epochs}", evaluate=not monitor_ran)

    return Clock()


def copy_run_files(run_dir: Path, dest: Path) -> None:
    """args.json and the CSV log of a run, flat (``dest/args.json``, ``dest/metrics.csv``)."""
    dest.mkdir(parents=True, exist_ok=True)
    if (run_dir / "args.json").is_file():
        shutil.copy(run_dir / "args.json", dest / "args.json")
    logs = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if logs:
        shutil.copy(logs[-1], dest / "metrics.csv")


def run_engine(plan: DictConfig, cell: DictConfig, epochs: int, args: argparse.Namespace,
               deadline: float, out: Path, config: Optional[Path] = None) -> dict[str, Any]:
    """One pretraining run of this engine; writes its records into ``out``, returns the summary."""
    import torch

    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import pretrain
    from solo_mixmask.eval.records import record_from_run, write_record

    train, test = prepare_data(args)
    path = config or PAPER / str(cell.config)
    cfg = load_config(str(path.parent), path.name, engine_overrides(plan, cell, epochs, train,
                                                                    test, args))
    start = time.time()
    timer = clock(epochs, deadline, start)
    result = pretrain(cfg, callbacks=[timer])
    wall = time.time() - start
    ends = timer.ends
    finished = len(ends)
    per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else wall
    kept = f"runs/{cell.id}"
    record = record_from_run(result.run_dir)
    knn_settings = {"feature": str(result.cfg.knn_eval.feature), "vote": str(result.cfg.knn_eval.vote)}
    info = {"cell": cell.id, "device": device_name(), "commit": commit(),
            "protocol": f"the paper's (scripts/pretrain/paper/cifar100/{path.name}, CIFAR-10)"
            if config is None else f"solo-learn's {cell.solo_config}",
            "epochs": finished, "budget_epochs": epochs, "wall_time_s": round(wall, 1),
            "seconds_per_epoch": round(per_epoch, 2),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), **knn_settings}
    record["settings"].update(info)
    record.update(command=f"python benchmarks/gpu_plan.py next (cell {cell.id})", run_dir=kept)
    if cell.get("label"):  # an anchor is not one of the paper's variants: a row of its own
        record["variant"] = str(cell.label)
    write_record(record, out)
    copy_run_files(result.run_dir, out / kept)
    complete = finished >= epochs and timer.stopped is None
    summary = {**info, "knn_top1": record["metrics"]["acc1"],
               "knn_top5": record["metrics"].get("acc5"), "complete": complete}
    if not complete:
        summary["reason"] = timer.stopped or f"{finished} of {epochs} epochs ran"
    published = (cell.get("published") or {}).get("knn") or {}
    if published:
        near = min(published, key=lambda e: abs(int(e) - finished))
        summary["published"] = {"epoch": int(near), "knn_top1": float(published[near]),
                                "source": str(cell.published.source)}
    reserve = SMOKE_PROBE_RESERVE_S if args.cpu_smoke else PROBE_RESERVE_S
    if time.time() < deadline - reserve:
        t = time.time()
        summary["linear_top1"] = linear_probe(result, train, test, out, kept, info, args)
        summary["probe_s"] = round(time.time() - t, 1)
    else:
        summary["linear_top1"] = None
        summary["probe_skipped"] = f"under {reserve:.0f} s left before the time limit"
    return summary


def linear_probe(result: Any, train: Path, test: Path, out: Path, kept: str,
                 info: dict[str, Any], args: argparse.Namespace) -> float:
    """W-MSE's probe on precomputed backbone features of unaugmented images (100 epochs)."""
    import torch

    from solo_mixmask.data.loaders import build_eval_loader
    from solo_mixmask.data.spec import LoaderSpec
    from solo_mixmask.eval.feature_probe import train_feature_probe
    from solo_mixmask.eval.features import extract_features
    from solo_mixmask.eval.records import make_record, write_record

    cfg = result.cfg
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = result.model.to(device)
    spec = LoaderSpec.from_config(cfg, gpu=True)
    feats = [extract_features(model.backbone, build_eval_loader(spec, str(p), train=t),
                              device) for p, t in ((train, True), (test, False))]
    epochs = SMOKE_PROBE_EPOCHS if args.cpu_smoke else PROBE_EPOCHS
    probe = train_feature_probe(*feats[0], *feats[1], 10, epochs=epochs, device=device)
    record = make_record("linear", {"acc1": probe["acc1"], "acc5": probe["acc5"]},
                         checkpoint=result.checkpoint, dataset="cifar10",
                         settings={**info, "protocol": "wmse-probe", "max_epochs": epochs},
                         info={"method": cfg.method}, overrides={"epochs": info["epochs"]},
                         command=f"python benchmarks/gpu_plan.py next (cell {info['cell']})")
    record["run_dir"] = kept
    write_record(record, out)
    return probe["acc1"]


def check_solo_learn(cell: DictConfig, args: argparse.Namespace) -> Path:
    if not args.solo_learn:
        raise BadInput(f"cell {cell.id} needs --solo-learn DIR (a solo-learn checkout)")
    config = Path(args.solo_learn) / str(cell.solo_config)
    if not config.is_file():
        raise BadInput(f"{config} not found in the solo-learn checkout")
    return config


def run_solo_learn(plan: DictConfig, cell: DictConfig, epochs: int, args: argparse.Namespace,
                   deadline: float, out: Path) -> dict[str, Any]:
    """solo-learn's own main_pretrain.py on its config (wall time per epoch, start-up included),
    or this engine on that same file."""
    config = check_solo_learn(cell, args)
    if cell.runner == "engine-solo-config":
        return run_engine(plan, cell, epochs, args, deadline, out, config=config)
    train, test = prepare_data(args)
    run_dir = Path(args.work) / "solo-learn-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cmd = [sys.executable, str(Path(args.solo_learn) / "main_pretrain.py"),
           "--config-path", str(config.parent), "--config-name", config.name,
           f"++max_epochs={epochs}", f"++data.train_path={train}", f"++data.val_path={test}",
           "++data.dataset=cifar10", "++devices=[0]", "++strategy=auto", "++wandb.enabled=false",
           "++checkpoint.enabled=false", "++auto_resume.enabled=false", "++knn_eval.enabled=true",
           "++knn_eval.k=200", "++knn_eval.distance_func=cosine", f"++name={cell.id}"]
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True,
                              timeout=max(60, deadline - time.time()))
        code, log = proc.returncode, proc.stdout[-20000:] + proc.stderr[-20000:]
    except subprocess.TimeoutExpired as exc:
        code, log = None, f"stopped at the time limit\n{exc.stdout or ''}{exc.stderr or ''}"[-40000:]
    wall = time.time() - start
    (out / f"{cell.id}.log").write_text(log if isinstance(log, str) else log.decode(errors="replace"))
    metrics = sorted(run_dir.rglob("metrics.csv"))
    knn = None
    if metrics:
        import csv

        rows = [r for r in csv.DictReader(metrics[-1].open()) if r.get("val_knn_acc1")]
        knn = float(rows[-1]["val_knn_acc1"]) if rows else None
    summary = {"cell": cell.id, "device": device_name(), "commit": commit(),
               "protocol": f"solo-learn main_pretrain.py {cell.solo_config}", "epochs": epochs,
               "wall_time_s": round(wall, 1), "seconds_per_epoch_with_startup": round(wall / epochs, 2),
               "knn_top1": knn, "returncode": code, "complete": code == 0 and knn is not None}
    if not summary["complete"]:
        summary["reason"] = ("stopped at the time limit" if code is None else
                             f"exit {code}" if code else "no KNN in its log")
    return summary


# ---------------------------------------------------------------------------------- commands
def cmd_status(plan: DictConfig, args: argparse.Namespace) -> int:
    finished = done(plan, records_dir(plan, args))
    print(f"budget: {plan.epochs if plan.epochs is not None else 'not fixed (run calibrate)'} "
          f"epochs per cell, {plan.window_minutes} min windows")
    for cell in plan.cells:
        print(f"  [{'x' if cell.id in finished else ' '}] {cell.id}")
    print(f"{len(finished)} of {len(plan.cells)} cells done")
    return 0


def limit_s(plan: DictConfig, args: argparse.Namespace) -> float:
    if args.limit_s is not None:
        return float(args.limit_s)
    return 60 * float(args.limit_min or plan.window_minutes)


def cmd_calibrate(plan: DictConfig, args: argparse.Namespace) -> int:
    """Times two epochs of the slowest cell (the second one is steady state), with its KNN and
    probe, and proposes the budget E that fits the plan's window with the measured start-up and
    evaluation. Writes ``calibration.json``; the run's own records stay in ``--work``."""
    cell = find_cell(plan, SLOWEST)
    data_root(args.data)
    start = time.time()
    epochs = 1 if args.cpu_smoke else 2
    summary = run_engine(plan, cell, epochs, args, start + limit_s(plan, args),
                         Path(args.work) / "calibration-run")
    fixed = summary["wall_time_s"] - summary["epochs"] * summary["seconds_per_epoch"]
    probe = float(summary.get("probe_s") or 0.0)
    window = float(plan.window_minutes) * 60
    spe = summary["seconds_per_epoch"]
    proposed = max(1, math.floor((window - MARGIN_S - max(fixed, 0) - probe) / max(spe, 1e-3)))
    info = {"device": summary["device"], "commit": summary["commit"], "cell": cell.id,
            "epochs_timed": summary["epochs"], "seconds_per_epoch": spe,
            "fixed_seconds": round(fixed, 1), "probe_seconds": probe, "window_s": window,
            "margin_s": MARGIN_S, "proposed_epochs": proposed, "knn_top1": summary["knn_top1"],
            "linear_top1": summary.get("linear_top1"), "cudnn_benchmark": summary["cudnn_benchmark"],
            "wall_time_total_s": round(time.time() - start, 1), "smoke": bool(args.cpu_smoke),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "calibration.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info), flush=True)
    return 0


def cmd_next(plan: DictConfig, args: argparse.Namespace) -> int:
    if args.cell:
        cell = find_cell(plan, args.cell)
    else:
        finished = done(plan, records_dir(plan, args))
        todo = [c for c in plan.cells if c.id not in finished]
        if not todo:
            print("every cell has a record")
            return 0
        cell = todo[0]
    budget = args.epochs if args.epochs is not None else plan.epochs
    if budget is None and not args.cpu_smoke:
        raise BadInput("the plan's epochs is not fixed yet: pass --epochs E, or run "
                       "benchmarks/gpu_window.py, which calibrates first")
    epochs = 1 if args.cpu_smoke else cell_epochs(plan, cell, int(budget))
    data_root(args.data)  # bad input before anything is written
    if cell.get("runner"):
        check_solo_learn(cell, args)
    start = time.time()
    deadline = start + limit_s(plan, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {"cell": cell.id, "device": device_name(), "commit": commit(), "budget_epochs": epochs,
            "complete": False, "smoke": bool(args.cpu_smoke)}
    write_summary(out, {**base, "reason": "started, did not finish (the process was killed)"})
    print(f"cell {cell.id}: {epochs} epochs on {base['device']}", flush=True)
    runner = run_solo_learn if cell.get("runner") else run_engine
    code = 0
    try:
        summary = runner(plan, cell, int(epochs), args, deadline, out)
    except Exception as exc:  # noqa: BLE001 - the summary says why, the traceback goes to the log
        traceback.print_exc()
        summary = {**base, "reason": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                   if str(exc) else f"failed: {type(exc).__name__}"}
        code = 1
    summary["wall_time_total_s"] = round(time.time() - start, 1)
    if args.cpu_smoke:
        summary["complete"] = False  # a smoke run never counts as a cell
        summary["smoke"] = True
        summary.setdefault("reason", "a CPU smoke run never closes a cell")
    write_summary(out, summary)
    print(json.dumps(summary), flush=True)
    return code


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("status", "calibrate", "next"))
    p.add_argument("--plan", default=str(PLAN))
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_plan_out"))
    p.add_argument("--data", default=None, help="folder holding cifar10-jpeg/ (default: "
                   "$SOLO_MIXMASK_DATA, .device/data, ../shared/data)")
    p.add_argument("--work", default="/tmp/solo-mixmask-gpu-plan", help="unpacked images, caches, "
                   "run folders")
    p.add_argument("--records", default=None, help="records folder (default: the plan's)")
    p.add_argument("--cell", default=None, help="run this cell instead of the first open one")
    p.add_argument("--epochs", type=int, default=None, help="the common budget E (default: the plan's)")
    p.add_argument("--limit-min", type=float, default=None, help="time limit of a cell (minutes)")
    p.add_argument("--limit-s", type=float, default=None, help="time limit of a cell (seconds)")
    p.add_argument("--solo-learn", default=None, help="a solo-learn checkout, for the (b) cells")
    p.add_argument("--cpu-smoke", action="store_true", help="a tiny CPU run of the same code")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise BadInput(f"--epochs {args.epochs}: must be at least 1")
    bootstrap()
    plan = load_plan(Path(args.plan))
    return {"status": cmd_status, "calibrate": cmd_calibrate, "next": cmd_next}[args.command](
        plan, args)


if __name__ == "__main__":
    run_main(main)
