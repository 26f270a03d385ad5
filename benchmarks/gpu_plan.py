"""The GPU evidence plan, cell by cell (benchmarks/gpu_plan.yaml).

    python benchmarks/gpu_plan.py status                       # which cells have records
    python benchmarks/gpu_plan.py calibrate --out DIR          # time the slowest cell, propose E
    python benchmarks/gpu_plan.py next --out DIR               # run the first cell without a record
    python benchmarks/gpu_plan.py next --out DIR --cpu-smoke   # the same code, tiny, on the CPU

Each GPU window runs one cell: a complete pretraining run on all 50,000 CIFAR-10 training images in
the paper's protocol at the plan's common epoch budget, ending with KNN on the 10,000 test images
(and W-MSE's linear probe on precomputed features when time is left). ``next`` writes into ``--out``
the cell's result records (JSON), its args.json and CSV log, and ``summary-<cell>.json`` (device,
commit, protocol, wall time, seconds per epoch), never a checkpoint; copying them into the plan's
records folder (docs/results/gpu-cifar10) marks the cell done. A hard limit (``--limit-min``, the
plan's window by default) stops a cell that would overrun; its summary then says so and the cell
stays open. ``--data`` is the folder holding cifar10-jpeg/ (default: ../shared/data).
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
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
PLAN = REPO / "benchmarks" / "gpu_plan.yaml"
PAPER = REPO / "scripts" / "pretrain" / "paper" / "cifar100"
SLOWEST = "moco-mixmask_star-s0"  # two extra forward passes per step


def load_plan(path: Path = PLAN) -> DictConfig:
    plan = OmegaConf.load(path)
    ids = [c.id for c in plan.cells]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"error: {path}: cell ids repeat")
    return plan


def done(plan: DictConfig, records: Optional[Path] = None) -> set[str]:
    """Cells whose complete summary is in the records folder."""
    folder = records or REPO / plan.records
    out = set()
    for path in folder.glob("summary-*.json"):
        summary = json.loads(path.read_text())
        if summary.get("complete"):
            out.add(summary["cell"])
    return out


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def commit() -> str:
    from reproduce import commit as repo_commit

    return repo_commit()


# ------------------------------------------------------------------------------------- data
def prepare_data(args: argparse.Namespace) -> tuple[Path, Path]:
    from solo_mixmask.data.npz import shared_data_dir, unpack_npz

    beside = REPO.parent / "shared" / "data"
    root = Path(args.data) if args.data else (beside if beside.is_dir() else shared_data_dir())
    if root is None or not (root / "cifar10-jpeg").is_dir():
        raise SystemExit("error: cifar10-jpeg/ not found: pass --data DIR (the folder holding it)")
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
           f"seed={int(cell.get('seed', 0))}", f"checkpoint.dir={Path(args.work) / 'runs'}",
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
def run_engine(plan: DictConfig, cell: DictConfig, epochs: int, args: argparse.Namespace,
               deadline: float, config: Optional[Path] = None) -> dict[str, Any]:
    """One pretraining run of this engine; returns the summary and writes the outputs."""
    from lightning.pytorch.callbacks import Callback

    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import pretrain
    from solo_mixmask.eval.records import record_from_run, write_record

    train, test = prepare_data(args)
    path = config or PAPER / str(cell.config)
    cfg = load_config(str(path.parent), path.name, engine_overrides(plan, cell, epochs, train,
                                                                    test, args))
    ends: list[float] = []
    state = {"stopped": None}

    class Clock(Callback):
        """Epoch ends; stops at the plan's budget (a longer schedule's first epochs) or the
        deadline, leaving a minute for the evaluation."""

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            ends.append(time.time())
            if trainer.current_epoch + 1 >= epochs:
                trainer.should_stop = True
            elif time.time() + 1.5 * (ends[-1] - (ends[-2] if len(ends) > 1 else start)) \
                    > deadline - 60:
                state["stopped"] = trainer.current_epoch + 1
                trainer.should_stop = True

    start = time.time()
    result = pretrain(cfg, callbacks=[Clock()])
    wall = time.time() - start
    finished = len(ends)
    per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else wall
    out = Path(args.out)
    kept = f"runs/{cell.id}"
    record = record_from_run(result.run_dir)
    knn_settings = {"feature": str(result.cfg.knn_eval.feature), "vote": str(result.cfg.knn_eval.vote)}
    info = {"cell": cell.id, "device": device_name(), "commit": commit(),
            "protocol": f"the paper's (scripts/pretrain/paper/cifar100/{path.name}, CIFAR-10)"
            if config is None else f"solo-learn's {cell.solo_config}",
            "epochs": finished, "budget_epochs": epochs, "wall_time_s": round(wall, 1),
            "seconds_per_epoch": round(per_epoch, 2), **knn_settings}
    record["settings"].update(info)
    record.update(command=f"python benchmarks/gpu_plan.py next (cell {cell.id})", run_dir=kept)
    if cell.get("label"):  # an anchor is not one of the paper's variants: a row of its own
        record["variant"] = str(cell.label)
    write_record(record, out)
    dest = out / kept
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.run_dir / "args.json", dest / "args.json")
    for csv in result.run_dir.glob("logs/version_*/metrics.csv"):
        (dest / csv.parent.relative_to(result.run_dir)).mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, dest / csv.relative_to(result.run_dir))
    summary = {**info, "knn_top1": record["metrics"]["acc1"], "knn_top5": record["metrics"]["acc5"],
               "complete": finished >= epochs and state["stopped"] is None}
    published = (cell.get("published") or {}).get("knn") or {}
    if published:
        near = min(published, key=lambda e: abs(int(e) - finished))
        summary["published"] = {"epoch": int(near), "knn_top1": float(published[near]),
                                "source": str(cell.published.source)}
    if time.time() < deadline - 90 and not args.cpu_smoke:
        summary["linear_top1"] = linear_probe(result, train, test, out, kept, info)
    return summary


def linear_probe(result, train: Path, test: Path, out: Path, kept: str,
                 info: dict[str, Any]) -> float:
    """W-MSE's probe on precomputed backbone features of unaugmented images (100 epochs)."""
    import torch

    from solo_mixmask.data.loaders import build_eval_loader
    from solo_mixmask.eval.feature_probe import train_feature_probe
    from solo_mixmask.eval.features import extract_features
    from solo_mixmask.eval.records import make_record, write_record

    cfg = result.cfg
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = result.model.to(device)
    feats = [extract_features(model.backbone, build_eval_loader(cfg, str(p), train=t, gpu=True),
                              device) for p, t in ((train, True), (test, False))]
    probe = train_feature_probe(*feats[0], *feats[1], 10, epochs=100, device=device)
    record = make_record("linear", {"acc1": probe["acc1"], "acc5": probe["acc5"]},
                         checkpoint=str(result.run_dir), dataset="cifar10",
                         settings={**info, "protocol": "wmse-probe", "max_epochs": 100},
                         info={"method": cfg.method}, overrides={"epochs": info["epochs"]},
                         command=f"python benchmarks/gpu_plan.py next (cell {info['cell']})")
    record["run_dir"] = kept
    write_record(record, out)
    return probe["acc1"]


def run_solo_learn(plan: DictConfig, cell: DictConfig, epochs: int, args: argparse.Namespace,
                   deadline: float) -> dict[str, Any]:
    """solo-learn's own main_pretrain.py on its config (wall time per epoch, start-up included),
    or this engine on that same file."""
    if not args.solo_learn:
        raise SystemExit(f"error: cell {cell.id} needs --solo-learn DIR (a solo-learn checkout)")
    config = Path(args.solo_learn) / str(cell.solo_config)
    if not config.is_file():
        raise SystemExit(f"error: {config} not found in the solo-learn checkout")
    if cell.runner == "engine-solo-config":
        return run_engine(plan, cell, epochs, args, deadline, config=config)
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
    proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True,
                          timeout=max(60, deadline - time.time()))
    wall = time.time() - start
    (Path(args.out) / f"{cell.id}.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    metrics = sorted(run_dir.rglob("metrics.csv"))
    knn = None
    if metrics:
        import csv

        rows = [r for r in csv.DictReader(metrics[-1].open()) if r.get("val_knn_acc1")]
        knn = float(rows[-1]["val_knn_acc1"]) if rows else None
    return {"cell": cell.id, "device": device_name(), "commit": commit(),
            "protocol": f"solo-learn main_pretrain.py {cell.solo_config}", "epochs": epochs,
            "wall_time_s": round(wall, 1), "seconds_per_epoch_with_startup": round(wall / epochs, 2),
            "knn_top1": knn, "returncode": proc.returncode,
            "complete": proc.returncode == 0 and knn is not None}


# ---------------------------------------------------------------------------------- commands
def cmd_status(plan: DictConfig, args: argparse.Namespace) -> int:
    finished = done(plan, Path(args.records) if args.records else None)
    print(f"budget: {plan.epochs if plan.epochs is not None else 'not fixed (run calibrate)'} "
          f"epochs per cell, {plan.window_minutes} min windows")
    for cell in plan.cells:
        print(f"  [{'x' if cell.id in finished else ' '}] {cell.id}")
    print(f"{len(finished)} of {len(plan.cells)} cells done")
    return 0


def cmd_calibrate(plan: DictConfig, args: argparse.Namespace) -> int:
    """Times two epochs of the slowest cell (the second one is steady state) and proposes the
    budget that fits the window with its start-up and evaluation."""
    cell = next(c for c in plan.cells if c.id == SLOWEST)
    start = time.time()
    summary = run_engine(plan, cell, 1 if args.cpu_smoke else 2, args, deadline=start + 3600)
    fixed = summary["wall_time_s"] - summary["epochs"] * summary["seconds_per_epoch"]
    window = plan.window_minutes * 60
    proposed = max(1, math.floor((window - 90 - max(fixed, 0)) / summary["seconds_per_epoch"]))
    info = {"device": device_name(), "cell": cell.id, "seconds_per_epoch": summary["seconds_per_epoch"],
            "fixed_seconds": round(fixed, 1), "window_s": window, "proposed_epochs": proposed}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "calibration.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


def cmd_next(plan: DictConfig, args: argparse.Namespace) -> int:
    finished = done(plan, Path(args.records) if args.records else None)
    todo = [c for c in plan.cells if c.id not in finished]
    if args.cell:
        todo = [c for c in plan.cells if c.id == args.cell]
        if not todo:
            raise SystemExit(f"error: no cell {args.cell!r} in the plan")
    if not todo:
        print("every cell has a record")
        return 0
    cell = todo[0]
    epochs = 1 if args.cpu_smoke else plan.epochs
    if epochs is None:
        raise SystemExit("error: the plan's epochs is not fixed yet: run calibrate and set it")
    epochs = max(1, round(int(epochs) * float(cell.get("epochs_factor", 1.0))))
    start = time.time()
    deadline = start + 60 * (args.limit_min or plan.window_minutes)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"cell {cell.id}: {epochs} epochs on {device_name()}", flush=True)
    runner = run_solo_learn if cell.get("runner") else run_engine
    summary = runner(plan, cell, int(epochs), args, deadline)
    summary["wall_time_total_s"] = round(time.time() - start, 1)
    if args.cpu_smoke:
        summary["complete"] = False  # a smoke run never counts as a cell
        summary["smoke"] = True
    (Path(args.out) / f"summary-{cell.id}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("status", "calibrate", "next"))
    p.add_argument("--plan", default=str(PLAN))
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_plan_out"))
    p.add_argument("--data", default=None, help="folder holding cifar10-jpeg/ (default: ../shared/data)")
    p.add_argument("--work", default="/tmp/solo-mixmask-gpu-plan", help="unpacked images, caches")
    p.add_argument("--records", default=None, help="records folder (default: the plan's)")
    p.add_argument("--cell", default=None, help="run this cell instead of the first open one")
    p.add_argument("--limit-min", type=float, default=None, help="hard limit of a cell (minutes)")
    p.add_argument("--solo-learn", default=None, help="a solo-learn checkout, for the (b) cells")
    p.add_argument("--cpu-smoke", action="store_true", help="a tiny CPU run of the same code")
    args = p.parse_args(argv)
    plan = load_plan(Path(args.plan))
    return {"status": cmd_status, "calibrate": cmd_calibrate, "next": cmd_next}[args.command](
        plan, args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait on loader teardown, which can stall at exit on a GPU machine
