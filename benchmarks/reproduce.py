"""Reproduce the direction of the paper's comparison (vanilla vs Un-Mix vs erase-based vs MixMask
vs MixMask*) at small scale on real CIFAR-10 images, and record the results.

    python benchmarks/reproduce.py --method mocov2plus --variant vanilla mixmask erase --seed 0
    solo-mixmask report docs/results/cifar10-subset --out docs/results/cifar10-subset
    python benchmarks/reproduce.py --config benchmarks/reproduce_paper.yaml \
        --results docs/results/cifar10-subset-paper --variant vanilla mixmask --seed 0 1

Every run pretrains with the budget of ``benchmarks/reproduce.yaml``, logs KNN top-1 (k=200,
T=0.1, clean train bank) on the test split every few epochs, then trains a linear probe on frozen
features of the final backbone. It appends to ``--results`` (default
``docs/results/cifar10-subset``): a ``knn`` and a ``linear`` record (JSON), and the run's args.json
and CSV logs (for the curves); checkpoints stay in ``--work``. Extra ``key=value`` arguments override
the pretraining config. ``--resume`` continues a stopped run from its last checkpoint in ``--work``
(resumption is exact, so the record is that of the uninterrupted run); its wall time adds the
stopped segment's, up to its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from device_env import REPO, BadInput, commit, run_main
from omegaconf import OmegaConf

DEFAULT_PLAN = REPO / "benchmarks" / "reproduce.yaml"
DEFAULT_RESULTS = REPO / "docs" / "results" / "cifar10-subset"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}"


def prepare_data(spec, work: Path) -> tuple[Path, Path]:
    from solo_mixmask.data.npz import shared_data_dir, unpack_npz
    from solo_mixmask.errors import DataError

    root = shared_data_dir()
    if root is None:
        raise DataError(f"real {spec.dataset} data not found: put it at ../shared/data or set "
                        "SOLO_MIXMASK_DATA")
    name = spec.dataset
    train = unpack_npz(root / spec.train_npz, work / f"{name}-train-{spec.train_per_class or 'all'}",
                       spec.train_per_class)
    test = unpack_npz(root / spec.test_npz, work / f"{name}-test-{spec.test_per_class or 'all'}",
                      spec.test_per_class)
    return train, test


def pretrain_config(plan, method: str, variant: str, seed: int, train: Path, test: Path,
                    work: Path, overrides: list[str]):
    m = plan.methods[method]
    kwargs = OmegaConf.merge(m.method_kwargs, plan.variants[variant] or {})
    cfg = OmegaConf.create({
        "name": f"repro-{method}-{variant}-s{seed}",
        "method": method if variant == "vanilla" else f"mixmask_{method}",
        "backbone": plan.backbone,
        "method_kwargs": kwargs,
        "momentum": m.get("momentum", {}),
        "data": {"dataset": plan.data.dataset, "train_path": str(train), "val_path": str(test),
                 "num_workers": plan.data.num_workers},
        "augmentations": plan.augmentations,
        "optimizer": {**OmegaConf.to_container(m.optimizer),
                      "batch_size": plan.budget.batch_size},
        "scheduler": m.scheduler,
        "knn_eval": {"enabled": True, "bank": "clean", "k": plan.knn.k, "T": plan.knn.T,
                     "distance_func": "cosine", "frequency": plan.knn.frequency},
        "checkpoint": {"enabled": True, "dir": str(work / "runs")},
        "max_epochs": plan.budget.max_epochs,
        "accelerator": "auto",
        "devices": 1,
        "precision": 32,
        "seed": seed,
        "enable_progress_bar": sys.stderr.isatty(),
    })
    cfg = OmegaConf.merge(cfg, m.get("config") or {})  # a method's extra settings, if any
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def linear_config(plan, checkpoint: Path, train: Path, test: Path, results: Path, work: Path):
    return OmegaConf.create({
        "name": "repro-linear",
        "pretrained_feature_extractor": str(checkpoint),
        "data": {"dataset": plan.data.dataset, "train_path": str(train), "val_path": str(test),
                 "num_workers": plan.data.num_workers},
        "optimizer": {"name": "sgd", "batch_size": plan.linear.batch_size, "lr": plan.linear.lr,
                      "weight_decay": 0.0},
        "scheduler": {"name": "cosine"},
        "features": {"precompute": True},
        "max_epochs": plan.linear.max_epochs,
        "checkpoint": {"enabled": False, "dir": str(work / "linear")},
        "results_dir": str(results),
        "accelerator": "auto",
        "devices": 1,
        "enable_progress_bar": False,
    })


def protocol_linear_config(plan, method: str, checkpoint: Path, train: Path, test: Path,
                           results: Path, work: Path):
    """The method's own linear protocol (a config of scripts/linear/paper), on this plan's data and
    backbone; None when the plan names none."""
    from solo_mixmask.config import load_config

    path = (plan.methods[method].get("protocol") or {}).get("linear")
    if not path:
        return None
    path = REPO / path
    cfg = load_config(str(path.parent), path.name, [
        f"pretrained_feature_extractor={checkpoint}", f"data.dataset={plan.data.dataset}",
        f"data.train_path={train}", f"data.val_path={test}",
        f"data.num_workers={plan.data.num_workers}", "checkpoint.enabled=false",
        f"checkpoint.dir={work / 'linear-protocol'}", f"results_dir={results}",
        "accelerator=auto", "devices=1", "enable_progress_bar=false"])
    cfg.backbone = OmegaConf.to_container(plan.backbone)  # the plan's width, not the paper's
    return cfg


def protocol_knn_argv(plan, method: str, checkpoint: Path, train: Path, test: Path,
                      results: Path) -> Optional[list[str]]:
    """``solo-mixmask knn`` arguments of the method's own KNN protocol; None when the plan names
    none (its KNN is then the common one)."""
    flags = (plan.methods[method].get("protocol") or {}).get("knn")
    if not flags:
        return None
    return ["knn", str(checkpoint), "--train-path", str(train), "--val-path", str(test),
            "--dataset", str(plan.data.dataset), "--num-workers", str(plan.data.num_workers),
            "--results-dir", str(results), *[str(f) for f in flags]]


def stopped_segment(cfg) -> tuple[float, Optional[str]]:
    """Seconds a stopped run of ``cfg`` ran up to its last checkpoint (args.json is written at its
    start), and that checkpoint's name; (0, None) when there is none to resume."""
    from solo_mixmask.engine.checkpoint import find_resumable
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    parsed = parse_pretrain_cfg(cfg.copy())
    ckpt = find_resumable(parsed, Path(parsed.checkpoint.dir) / parsed.method, 0)
    if ckpt is None:
        return 0.0, None
    started = (ckpt.parent / "args.json").stat().st_mtime
    return max(0.0, ckpt.stat().st_mtime - started), ckpt.name


def keep_logs(run_dir: Path, dest: Path) -> None:
    """args.json, final metrics and CSV logs of a run (no checkpoints) for the report's curves."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("args.json", "final_metrics.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, dest / name)
    for csv in run_dir.glob("logs/version_*/metrics.csv"):
        target = dest / csv.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, target)


def run_one(plan, method: str, variant: str, seed: int, args) -> dict:
    import torch

    from solo_mixmask.cli import main as cli_main
    from solo_mixmask.data.datasets import scan_image_folder
    from solo_mixmask.engine.pretrain import pretrain
    from solo_mixmask.eval.linear import run_linear
    from solo_mixmask.eval.records import record_from_run, write_record

    work, results = Path(args.work), Path(args.results)
    train, test = prepare_data(plan.data, work / "data")
    cfg = pretrain_config(plan, method, variant, seed, train, test, work, args.overrides)
    label = args.label or variant  # the row of the report's table
    plan_path = Path(args.config).resolve()
    plan_arg = [] if plan_path == DEFAULT_PLAN else [
        f"--config {plan_path.relative_to(REPO) if plan_path.is_relative_to(REPO) else plan_path}"]
    if Path(args.results).resolve() != DEFAULT_RESULTS:
        results = Path(args.results).resolve()
        shown = results.relative_to(REPO) if results.is_relative_to(REPO) else results
        plan_arg.append(f"--results {shown}")
    command = " ".join([f"python benchmarks/reproduce.py --method {method} --variant {variant} "
                        f"--seed {seed}", *plan_arg,
                        *([f"--dataset {args.dataset}"] if args.dataset else []),
                        *([f"--label {args.label}"] if args.label else []),
                        *([f"--threads {args.threads}"] if args.threads else []),
                        *args.overrides]).strip()
    epochs = int(cfg.max_epochs)
    kept = f"runs/{method}-{label}-{epochs}ep-s{seed}"  # logs kept beside the records, relative to them
    done = recorded(results, kept) if args.resume else {}
    earlier, resumed = 0.0, None
    if args.resume:
        cfg.auto_resume = {"enabled": True, "max_hours": 0}
        earlier, resumed = stopped_segment(cfg)
        if done and resumed is None:
            raise BadInput(f"{results} holds records of {kept} ({', '.join(sorted(done))}) but "
                           f"--work {args.work} has no checkpoint of that run to evaluate again: "
                           "point --work at the run's work folder, or remove those records")
    start = time.time()
    result = pretrain(cfg)
    wall = time.time() - start + earlier
    extra = {"wall_time_s": round(wall, 1), "machine": machine(), "commit": commit(),
             "train_images": len(scan_image_folder(train).paths),
             "threads": torch.get_num_threads(), "seed": seed}
    if resumed is not None:
        extra["resumed_from"] = resumed
    record = done.get("monitor")
    if record is None:
        record = record_from_run(result.run_dir)
        record["settings"].update(extra)
        record.update(command=command, variant=label, run_dir=kept)
        write_record(record, results)

    def evaluated(part: str, evaluate: Callable[[str], Path]) -> float:
        """Top-1 of the run's ``part`` record: the one ``results`` holds, else the one
        ``evaluate(its command)`` writes, labelled with the run."""
        rec = done.get(part)
        if rec is None:
            rec = _label(evaluate(command + PARTS[part]), label, kept, extra,
                         command + PARTS[part])
        return rec["metrics"]["acc1"]

    def own_knn(argv: list[str]) -> Path:
        before = set(results.glob("knn-*.json"))
        if cli_main(argv) != 0:
            raise RuntimeError(f"the protocol KNN failed: solo-mixmask {' '.join(argv)}")
        (path,) = set(results.glob("knn-*.json")) - before
        return path

    def probe(cfg) -> Callable[[str], Path]:
        return lambda cmd: Path(run_linear(cfg, command=cmd).record_path)

    summary = {"method": method, "variant": label, "seed": seed, "epochs": epochs,
               "knn_top1": record["metrics"]["acc1"], "linear_top1": evaluated(
                   "linear", probe(linear_config(plan, result.checkpoint, train, test, results,
                                                 work)))}
    knn_argv = protocol_knn_argv(plan, method, result.checkpoint, train, test, results)
    if knn_argv is not None:
        summary["protocol_knn_top1"] = evaluated("protocol-knn", lambda _: own_knn(knn_argv))
    linear_cfg = protocol_linear_config(plan, method, result.checkpoint, train, test, results,
                                        work)
    if linear_cfg is not None:
        summary["protocol_linear_top1"] = evaluated("protocol-linear", probe(linear_cfg))
    keep_logs(result.run_dir, results / kept)
    summary.update(wall_time_min=round(wall / 60, 1),
                   redone=sorted(({"monitor"} | set(PARTS)) - set(done)))
    print(json.dumps(summary), flush=True)
    return summary


#: how a run's evaluation records are told apart: the suffix of their command (the pretraining
#: monitor's KNN has none)
PARTS = {"linear": "  (linear probe on frozen features)",
         "protocol-knn": "  (the protocol's own KNN)",
         "protocol-linear": "  (the protocol's own linear probe)"}


def part_of(record: dict) -> str:
    command = str(record.get("command", ""))
    return next((part for part, suffix in PARTS.items() if command.endswith(suffix)), "monitor")


def recorded(results: Path, kept: str) -> dict[str, dict]:
    """The evaluations of run ``kept`` that ``results`` already holds, by part: a resumed run redoes
    only the others, so a second --resume never adds a record of the same thing."""
    found = {}
    for path in sorted(results.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("run_dir") == kept and "metrics" in rec:
            found[part_of(rec)] = rec
    return found


def _label(path: Path, label: str, kept: str, extra: dict, command: str) -> dict:
    """An evaluation record of a run, given the run's row label, logs, provenance and command."""
    rec = json.loads(path.read_text())
    rec.update(variant=label, run_dir=kept)
    rec["settings"].update(extra)
    rec["command"] = command
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return rec


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``error:`` line and exit code 2 (``run_main``)."""

    def error(self, message: str):  # type: ignore[override]
        raise BadInput(message)


def parse_args(argv=None) -> argparse.Namespace:
    """Options, plus ``key=value`` config overrides wherever they stand: after ``--seed 0`` an
    override would otherwise be read as one more seed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    p = Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--config", default=str(DEFAULT_PLAN),
                   help="the plan: reproduce.yaml (solo-learn-style recipes) or "
                   "reproduce_paper.yaml (the paper's CIFAR MoCo protocol)")
    p.add_argument("--method", nargs="+", default=["mocov2plus"])
    p.add_argument("--variant", nargs="+", default=["vanilla", "mixmask", "erase"])
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--work", default=str(Path.home() / ".cache" / "solo-mixmask" / "reproduce"))
    p.add_argument("--dataset", default=None,
                   help="an entry of the plan's datasets section, whose keys replace its data "
                   "section's (default: the data section as it is)")
    p.add_argument("--label", default=None,
                   help="row name in the report for a modified variant (e.g. mixmask-grid4)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for this process (default: torch's, i.e. OMP_NUM_THREADS "
                   "or the core count); 1 each when two runs share 2 cores")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run of the same config from its last checkpoint "
                   "in --work (a fresh run when there is none)")
    p.add_argument("overrides", nargs="*", help="pretraining config overrides, key=value")
    args = p.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    args.error = p.error
    return args


def check_plan(args) -> object:
    """The plan and every run's config, validated before anything is unpacked or written: a
    missing or unreadable plan, an unknown method or variant, a bad override are one error line."""
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg
    from solo_mixmask.errors import SoloMixMaskError, one_line

    path = Path(args.config)
    if not path.is_file():
        raise BadInput(f"--config {args.config}: no such plan file")
    try:
        plan = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - YAML syntax errors of every kind
        raise BadInput(f"--config {args.config}: not a readable YAML plan "
                       f"({str(exc).splitlines()[0]})") from None
    for key in ("methods", "variants", "budget", "data"):
        if key not in plan:
            raise BadInput(f"--config {args.config}: the plan has no '{key}' section")
    if "dataset" not in plan.data:
        raise BadInput(f"--config {args.config}: the plan's data section names no 'dataset' "
                       "(the package's name of its images, e.g. cifar10)")
    if args.dataset is not None:
        named = plan.get("datasets") or {}
        if args.dataset not in named:
            raise BadInput(f"unknown --dataset {args.dataset!r}: the plan's datasets section "
                           f"names {list(named)}")
        plan.data = OmegaConf.merge(plan.data, named[args.dataset])
    for method in args.method:
        if method not in plan.methods:
            raise BadInput(f"unknown method {method!r}: {list(plan.methods)}")
    for variant in args.variant:
        if variant not in plan.variants:
            raise BadInput(f"unknown variant {variant!r}: {list(plan.variants)}")
    check_paths(args)
    work = Path(args.work) / "data"
    for method in args.method:
        check_protocol(plan, method, work)
        for variant in args.variant:
            for seed in args.seed:
                cfg = pretrain_config(plan, method, variant, seed, work / "train",
                                      work / "test", Path(args.work), args.overrides)
                try:
                    parse_pretrain_cfg(cfg)
                except SoloMixMaskError as exc:
                    raise BadInput(one_line(exc)) from None
    return plan


def check_paths(args) -> None:
    """The label names one folder of the records; --results and --work are folders (or can be)."""
    if args.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.label):
        raise BadInput(f"--label {args.label!r}: use letters, digits, '.', '_' and '-' (it names "
                       "the run's folder beside the records)")
    for option, value in (("--results", args.results), ("--work", args.work)):
        path = Path(value)
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise BadInput(f"{option} {value}: {existing} is a file, not a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise BadInput(f"{option} {value}: {existing} is not writable")


def check_protocol(plan, method: str, work: Path) -> None:
    """A method's ``protocol:`` block: known keys, KNN flags that ``solo-mixmask knn`` takes, a
    linear config that composes and validates."""
    import contextlib
    import io

    from solo_mixmask.cli import build_parser
    from solo_mixmask.config.validation import validate
    from solo_mixmask.errors import SoloMixMaskError, one_line
    from solo_mixmask.eval.linear import LinearConfig

    spec = plan.methods[method].get("protocol") or {}
    unknown = sorted(set(spec) - {"knn", "linear"})
    if unknown:
        raise BadInput(f"methods.{method}.protocol: unknown key {unknown[0]!r} (knn, linear)")
    argv = protocol_knn_argv(plan, method, work / "model.ckpt", work, work, work)
    if argv is not None:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                _, extra = build_parser().parse_known_args(argv)
        except SystemExit:
            extra = [stderr.getvalue().strip().splitlines()[-1]]
        if extra:
            raise BadInput(f"methods.{method}.protocol.knn: {' '.join(extra)}")
    try:
        cfg = protocol_linear_config(plan, method, work / "model.ckpt", work, work, work, work)
        if cfg is not None:
            validate(cfg, LinearConfig)
    except SoloMixMaskError as exc:
        raise BadInput(f"methods.{method}.protocol.linear: {one_line(exc)}") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise BadInput(f"--threads {args.threads}: give 1 or more")
        import torch

        torch.set_num_threads(args.threads)
    plan = check_plan(args)
    for method in args.method:
        for variant in args.variant:
            for seed in args.seed:
                run_one(plan, method, variant, seed, args)
    return 0


if __name__ == "__main__":
    run_main(main)
