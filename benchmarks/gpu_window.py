"""One GPU window: a calibration, the speed record, then evidence cells, within a budget, into $OUT.

    python3 benchmarks/gpu_window.py                  # on a lent machine (prepare_device.py first)
    python3 benchmarks/gpu_window.py --cpu-smoke --budget-s 120 --out DIR   # the same, on the CPU
    python benchmarks/gpu_window.py ingest DIR        # here: what came back -> docs/, one commit

On a bare copy of the tree (the device's own packages, the carried ``.whl/`` and ``.device/``), it
installs the config libraries from the wheels, finds the carried data, and spends ``--budget-s``
(at most 570 s, 9.5 minutes) in this order, each part in a process of its own:

1. ``calibrate`` (``gpu_plan.py calibrate``), when the plan's ``epochs`` is not fixed: two epochs of
   the slowest cell with its KNN and probe; its proposed E is used for the cells of this window, and
   ``ingest`` writes it into the plan, where the next window reads it;
2. ``speed`` (``gpu_epoch.py --variants``), when this device kind has no record in
   ``docs/results/gpu-<kind>/gpu_epoch.json``: seven variants in about 3.5 minutes (image_folder
   and device, eager, vanilla and MixMask MoCo v2 in the paper's CIFAR form, then the device path
   compiled, then MixMask's device path with its crops made on a side stream,
   ``performance.augment_ahead``: last, so a short budget drops it first);
3. ``cell:<id>`` (``gpu_plan.py next --cell``), the plan's open cells in order while the next one's
   estimated cost (from the calibration) fits what is left.

An in-process watchdog ends a part that runs past the budget (its summary then says
``complete: false`` and why), and a second one ends the whole command 15 s later. After every part,
and every ``--tick-s`` while one runs, ``$OUT`` is rewritten as three plain files: ``window.json``
(the summary: device, commit, epochs, each part's status and summary), ``window.tar.gz`` (the
records, summaries, CSV logs and speed JSON of every part, ``window.json`` included) and
``window.log``; so a kill at any moment returns what was done. Nothing is written outside ``$OUT``
and the temporary folder. ``ingest`` puts the archive's contents into ``docs/results/gpu-cifar10/``,
``docs/results/gpu-<kind>/`` and ``docs/speed.md``, sets the plan's E, and renders the report.
"""

# ruff: noqa: E402 - the imports follow the line that keeps Python from writing into the tree
from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # nothing written into the tree, from the first import on

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from device_env import REPO, BadInput, bootstrap, commit, data_root, device_slug, out_problems, run_main
from gpu_epoch import table
from gpu_plan import cell_epochs, copy_run_files, device_name, done, load_plan, write_summary

PLAN = REPO / "benchmarks" / "gpu_plan.yaml"
SPEED_ROOT = REPO / "docs" / "results"
SPEED_DOC = REPO / "docs" / "speed.md"
MAX_BUDGET_S = 570.0
WATCHDOG_GRACE_S = 15.0
SUMMARY, ARCHIVE, LOG = "window.json", "window.tar.gz", "window.log"
SPEED_VARIANTS = ("mocov2plus/device/eager", "mixmask_mocov2plus/device/eager",
                  "mocov2plus/image_folder/eager", "mixmask_mocov2plus/image_folder/eager",
                  "mocov2plus/device/compile", "mixmask_mocov2plus/device/compile",
                  "mixmask_mocov2plus/device_ahead/eager")
SPEED_BUDGET_S, SPEED_MIN_S = 230.0, 60.0
SPEED_BEGIN, SPEED_END = "<!-- gpu_window:speed begin -->", "<!-- gpu_window:speed end -->"
CELL_FALLBACK_S = 480.0  # a cell's cost when no calibration says it (E fixed by hand)


def speed_record(root: Path, device: str) -> Path:
    """Where a device kind's ``gpu_epoch.py`` record lives."""
    return root / f"gpu-{device_slug(device)}" / "gpu_epoch.json"


def die_with_parent() -> None:
    """A part's process goes when the window's does, even on SIGKILL (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Window:
    """The parts of one window, their processes, and ``$OUT``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_s
        self.out = Path(args.out)
        self.tmp = Path(tempfile.gettempdir()) / "solo-mixmask-window"
        self.stage, self.work = self.tmp / "stage", self.tmp / "work"
        self.lock = threading.RLock()
        self.child: Optional[subprocess.Popen] = None
        self.records: Path = Path(args.records or ".")
        self.data: Path = Path(".")
        self.state: dict[str, Any] = {"complete": False, "smoke": bool(args.cpu_smoke),
                                      "budget_s": args.budget_s, "parts": []}

    # ------------------------------------------------------------------------------ out
    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[window {self.elapsed():6.1f}s] {text}"
        print(line, flush=True)
        with self.lock, open(self.out / LOG, "a") as fh:
            fh.write(line + "\n")

    def save(self) -> None:
        """``window.json`` and the archive, each replaced atomically."""
        with self.lock:
            self.state["wall_s"] = self.elapsed()
            text = json.dumps(self.state, indent=1, default=str) + "\n"
            self.stage.mkdir(parents=True, exist_ok=True)
            (self.stage / SUMMARY).write_text(text)
            tmp = self.out / (ARCHIVE + ".tmp")
            with tarfile.open(tmp, "w:gz") as tar:
                for path in sorted(self.stage.rglob("*")):
                    if path.is_file() and not path.name.endswith(".tmp"):
                        tar.add(path, arcname=str(path.relative_to(self.stage)))
            os.replace(tmp, self.out / ARCHIVE)
            tmp = self.out / (SUMMARY + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.out / SUMMARY)

    # ---------------------------------------------------------------------------- parts
    def env(self) -> dict[str, str]:
        """Caches of the libraries a part loads go to the temporary folder, not to $HOME."""
        cache = self.tmp / "cache"
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
                   XDG_CACHE_HOME=str(cache), MPLCONFIGDIR=str(cache / "matplotlib"),
                   TRITON_CACHE_DIR=str(cache / "triton"), TORCH_HOME=str(cache / "torch"),
                   TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
                   CUDA_CACHE_PATH=str(cache / "cuda"))
        env.pop("SOLO_MIXMASK_DATA", None)  # the part is given --data
        return env

    def kill_child(self) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def run_part(self, name: str, cmd: list[str], limit_s: float,
                 tick: Optional[Callable[[], None]] = None) -> dict[str, Any]:
        """Runs one part to its end or to its limit (never past the window's budget)."""
        part: dict[str, Any] = {"part": name, "status": "running", "started_s": self.elapsed()}
        with self.lock:
            self.state["parts"].append(part)
        self.save()
        self.say(f"{name}: start ({limit_s:.0f} s at most)")
        end = min(time.monotonic() + limit_s, self.deadline)
        with open(self.out / LOG, "a") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent, text=True, errors="replace")
            self.child = proc

            def pump() -> None:
                for line in proc.stdout:  # type: ignore[union-attr]
                    with self.lock:
                        log.write(f"[{name}] {line}")
                        log.flush()
                    sys.stdout.write(f"[{name}] {line}")

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            code: Optional[int] = None
            while True:
                try:
                    code = proc.wait(timeout=max(0.0, min(self.args.tick_s, end - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= end:
                        self.kill_child()
                        break
                    if tick is not None:
                        tick()
                    self.save()
            reader.join(timeout=5)
        self.child = None
        part["wall_s"] = round(self.elapsed() - part["started_s"], 1)
        part["returncode"] = code
        part["status"] = ("done" if code == 0 else f"failed (exit {code})" if code is not None
                          else f"stopped by the watchdog after {part['wall_s']:.0f} s")
        self.say(f"{name}: {part['status']} ({part['wall_s']:.0f} s)")
        return part

    def script(self, name: str, *args: str) -> list[str]:
        smoke = ["--cpu-smoke"] if self.args.cpu_smoke else []
        return [sys.executable, str(REPO / "benchmarks" / name), *args, *smoke]

    def plan_args(self) -> list[str]:
        return ["--work", str(self.work), "--data", str(self.data), "--plan", str(self.args.plan),
                "--records", str(self.records)]

    def calibrate(self) -> Optional[dict[str, Any]]:
        dest = self.stage / "calibration"
        part = self.run_part("calibrate", self.script("gpu_plan.py", "calibrate", "--out", str(dest),
                                                      *self.plan_args(),
                                                      "--limit-s", f"{self.left() - 10:.0f}"),
                             self.left())
        path = dest / "calibration.json"
        if part["returncode"] == 0 and path.is_file():
            part["summary"] = json.loads(path.read_text())
        else:
            part["summary"] = {"complete": False, "reason": part["status"]}
        self.save()
        return part["summary"] if "proposed_epochs" in part["summary"] else None

    def speed(self) -> None:
        dest = self.stage / "speed"
        budget = min(SPEED_BUDGET_S, self.left() - 20)
        extra = [] if self.args.cpu_smoke else ["--warmup", "3", "--steps", "20"]
        part = self.run_part("speed", self.script(
            "gpu_epoch.py", "--out", str(dest), "--cache", str(self.work / "bench"), "--data",
            str(self.data), "--variants", ",".join(SPEED_VARIANTS), "--budget-s", f"{budget:.0f}",
            *extra), budget + 20)
        path = dest / "gpu_epoch.json"
        if path.is_file():
            res = json.loads(path.read_text())
            variants = res.get("variants", {})
            part["summary"] = {"complete": len(variants) == len(SPEED_VARIANTS) and all(
                "error" not in v for v in variants.values()), "device": res.get("device"),
                "variants": {k: (round(v["epoch_s"], 3) if "epoch_s" in v else
                                 v.get("error", "?").splitlines()[0][:120])
                             for k, v in variants.items()},
                "ratios": res.get("ratios", {})}
            if not part["summary"]["complete"]:
                failed = sum("error" in v for v in variants.values())
                part["summary"]["reason"] = (f"{len(variants) - failed} of {len(SPEED_VARIANTS)} "
                                             f"variants measured; {part['status']}")
        else:
            part["summary"] = {"complete": False, "reason": part["status"]}
        self.save()

    def collect_run(self, cell: str) -> None:
        """The running cell's args.json and CSV log, copied into the stage as they grow."""
        runs = sorted(self.work.glob(f"runs/{cell}/*/*/args.json"), key=lambda p: p.stat().st_mtime)
        if runs:
            copy_run_files(runs[-1].parent, self.stage / "cells" / "runs" / cell)

    def cell(self, cell: Any, epochs: int) -> dict[str, Any]:
        dest = self.stage / "cells"
        part = self.run_part(f"cell:{cell.id}", self.script(
            "gpu_plan.py", "next", "--cell", str(cell.id), "--epochs", str(epochs), "--out",
            str(dest), *self.plan_args(), "--limit-s", f"{self.left() - 10:.0f}"), self.left(),
            tick=lambda: self.collect_run(str(cell.id)))
        path = dest / f"summary-{cell.id}.json"
        summary = json.loads(path.read_text()) if path.is_file() else {"cell": str(cell.id)}
        if part["returncode"] is None:  # killed by the watchdog: say so in the cell's summary
            self.collect_run(str(cell.id))
            summary.update(complete=False, reason=part["status"])
            dest.mkdir(parents=True, exist_ok=True)
            write_summary(dest, summary)
        part["summary"] = summary
        self.save()
        return summary

    # ----------------------------------------------------------------------------- main
    def run(self) -> int:
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        for name in (SUMMARY, ARCHIVE, LOG):
            (self.out / name).unlink(missing_ok=True)
        os.environ.update(self.env())  # this process's own imports too
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        self.state["config_libs"] = bootstrap()
        plan = load_plan(Path(args.plan))
        self.records = Path(args.records) if args.records else REPO / str(plan.records)
        self.data = data_root(args.data)
        device = device_name()
        if device == "cpu" and not args.cpu_smoke:
            raise BadInput("no CUDA device: pass --cpu-smoke for the CPU rehearsal")
        self.state.update(device=device, commit=commit(), data=str(self.data),
                          started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          command=" ".join(["python3 benchmarks/gpu_window.py", *args.argv]))
        self.state["epochs"] = None if plan.epochs is None else int(plan.epochs)
        self.state["epochs_source"] = "plan" if plan.epochs is not None else None
        self.say(f"{device}, commit {self.state['commit']}, budget {args.budget_s:.0f} s, data "
                 f"{self.data}, {self.state['config_libs']}")
        self.save()
        watchdog = threading.Timer(args.budget_s + WATCHDOG_GRACE_S, self.hard_stop)
        watchdog.daemon = True
        watchdog.start()

        calibration = None
        if plan.epochs is None:
            calibration = self.calibrate()
            if calibration is not None:
                self.state.update(epochs=int(calibration["proposed_epochs"]),
                                  epochs_source="calibrated in this window")
        elif (self.records / "calibration.json").is_file():
            calibration = json.loads((self.records / "calibration.json").read_text())
        if speed_record(Path(args.speed_root), device).is_file():
            self.say(f"speed: {speed_record(Path(args.speed_root), device)} exists; not run")
        elif self.left() < SPEED_MIN_S:
            self.skip("speed", f"under {SPEED_MIN_S:.0f} s left")
        else:
            self.speed()
        self.cells(plan, calibration, done(plan, self.records))
        watchdog.cancel()
        self.state["complete"] = True
        self.save()
        self.say(f"finished: {len(self.state['parts'])} parts; $OUT holds {SUMMARY}, {ARCHIVE}, {LOG}")
        problems = out_problems(self.out)
        if problems:
            self.say("$OUT would not come back whole: " + "; ".join(problems))
            return 1
        return 0

    def skip(self, name: str, why: str) -> None:
        with self.lock:
            self.state["parts"].append({"part": name, "status": f"skipped: {why}"})
        self.say(f"{name}: skipped: {why}")
        self.save()

    def cells(self, plan: Any, calibration: Optional[dict[str, Any]], finished: set[str]) -> None:
        epochs = self.state["epochs"]
        if epochs is None:
            self.skip("cells", "no epoch budget E (the calibration did not finish)")
            return
        ran = 0
        for cell in plan.cells:
            if cell.id in finished:
                continue
            if cell.get("runner"):
                self.skip(f"cell:{cell.id}", "needs a solo-learn checkout, which does not travel")
                continue
            if self.args.max_cells is not None and ran >= self.args.max_cells:
                self.skip(f"cell:{cell.id}", f"--max-cells {self.args.max_cells} reached")
                return
            n = 1 if self.args.cpu_smoke else cell_epochs(plan, cell, epochs)
            cost = CELL_FALLBACK_S if calibration is None else (
                calibration["fixed_seconds"] + n * calibration["seconds_per_epoch"]
                + calibration["probe_seconds"] + calibration["margin_s"])
            if cost > self.left():
                self.skip(f"cell:{cell.id}", f"needs about {cost:.0f} s ({n} epochs), "
                          f"{max(0.0, self.left()):.0f} s left")
                return
            self.cell(cell, epochs)
            ran += 1

    def hard_stop(self) -> None:
        """The second watchdog: the command itself ran past its budget."""
        self.kill_child()
        with self.lock:
            self.state["stopped"] = f"watchdog: the budget of {self.args.budget_s:.0f} s ran out"
            for part in self.state["parts"]:
                if part.get("status") == "running":
                    part["status"] = "stopped by the watchdog"
        try:
            self.save()
        finally:
            os._exit(3)


# ------------------------------------------------------------------------------------ ingest
def read_archive(src: Path, dest: Path) -> dict[str, Any]:
    """Unpacks a window's archive (``src``: the folder that came back, or the archive) into
    ``dest``; returns its summary."""
    archive = src / ARCHIVE if src.is_dir() else src
    if not archive.is_file():
        raise BadInput(f"{src}: no {ARCHIVE} there (the folder a window's $OUT came back to)")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise BadInput(f"{archive}: unexpected member {m.name!r}")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"{archive}: not a readable window archive ({exc})") from None
    try:
        return json.loads((dest / SUMMARY).read_text())
    except (OSError, ValueError):
        raise BadInput(f"{archive}: no readable {SUMMARY} inside") from None


def set_plan_epochs(plan: Path, epochs: int, note: str) -> bool:
    """Writes E into the plan's ``epochs: null`` line (comments kept); False when E is fixed."""
    text = plan.read_text()
    new, n = re.subn(r"(?m)^epochs:\s*null\b.*$", f"epochs: {epochs}  # {note}", text)
    if n:
        plan.write_text(new)
    return bool(n)


def speed_section(root: Path) -> str:
    """Every device kind's ``gpu_epoch.py`` record under ``root``, as markdown."""
    parts = []
    for path in sorted(root.glob("gpu-*/gpu_epoch*.json")):
        res = json.loads(path.read_text())
        rel = path.relative_to(root.parent.parent) if root.parent.parent in path.parents else path
        parts += [f"#### {res['device']}, {res.get('started', '?')}, commit {res.get('commit', '?')}",
                  "", f"`{res.get('command', '?')}` ({rel}; torch {res.get('torch', '?')}, "
                  f"{res['settings'].get('timed_steps')} timed steps after "
                  f"{res['settings'].get('warmup_steps')} warm-up, batch {res['settings']['batch']})",
                  "", table(res), ""]
        parts += [f"- {k}: {v:.2f}" for k, v in res.get("ratios", {}).items()]
        parts += [f"- {k}: {v['bound']}" for k, v in res["variants"].items() if v.get("bound")]
        parts.append("")
    return "\n".join(parts).strip() or "No GPU record yet."


def check_speed_doc(doc: Path) -> str:
    if not doc.is_file():
        raise BadInput(f"{doc} not found")
    text = doc.read_text()
    if SPEED_BEGIN not in text or SPEED_END not in text:
        raise BadInput(f"{doc}: no {SPEED_BEGIN} ... {SPEED_END} block to write the records into")
    return text


def write_speed_doc(doc: Path, root: Path) -> None:
    head, rest = check_speed_doc(doc).split(SPEED_BEGIN, 1)
    _, tail = rest.split(SPEED_END, 1)
    doc.write_text(f"{head}{SPEED_BEGIN}\n{speed_section(root)}\n{SPEED_END}{tail}")


def ingest(args: argparse.Namespace) -> int:
    bootstrap()
    from solo_mixmask.eval.report import build_report  # importable once bootstrap() has run

    plan = load_plan(Path(args.plan))
    records = Path(args.records) if args.records else REPO / str(plan.records)
    speed_root, doc = Path(args.speed_root), Path(args.speed_doc)
    check_speed_doc(doc)  # every check before anything is written
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        window = read_archive(Path(args.path), src)
        smoke = bool(window.get("smoke"))
        if smoke and not args.allow_smoke:
            raise BadInput(f"{args.path} is a CPU rehearsal (smoke), not evidence: pass "
                           "--allow-smoke with --records, --speed-root and --speed-doc elsewhere")
        device = str(window.get("device", "unknown"))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        changed: list[str] = []
        records.mkdir(parents=True, exist_ok=True)
        cal = src / "calibration" / "calibration.json"
        if cal.is_file():
            info = json.loads(cal.read_text())
            dest = records / "calibration.json"
            if dest.is_file():
                dest = records / "attempts" / f"calibration-{stamp}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cal, dest)
            changed.append(str(dest))
            note = (f"fixed by the calibration on {info['device']}, {info['created'][:10]} "
                    f"({records.name}/calibration.json)")
            if set_plan_epochs(Path(args.plan), int(info["proposed_epochs"]), note):
                changed.append(f"{args.plan} (epochs: {info['proposed_epochs']})")
        speed = src / "speed" / "gpu_epoch.json"
        if speed.is_file():
            dest = speed_record(speed_root, json.loads(speed.read_text())["device"])
            if dest.is_file():
                dest = dest.with_name(f"gpu_epoch-{stamp}.json")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(speed, dest)
            if (src / "speed" / "gpu_epoch.log").is_file():
                shutil.copy(src / "speed" / "gpu_epoch.log", dest.with_suffix(".log"))
            write_speed_doc(doc, speed_root)
            changed += [str(dest), str(doc)]
        finished = done(plan, records)
        cells = src / "cells"
        for path in sorted(cells.glob("summary-*.json")):
            summary = json.loads(path.read_text())
            cell = str(summary["cell"])
            if cell in finished:
                print(f"cell {cell}: already recorded in {records}; the earlier record is kept")
                continue
            if not (summary.get("complete") or (smoke and args.allow_smoke)):
                dest = records / "attempts" / f"summary-{cell}-{stamp}.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
                changed.append(f"{dest} (incomplete: {summary.get('reason', '?')})")
                continue
            for rec in cells.glob("*.json"):
                if rec.name.startswith("summary-"):
                    continue
                if (json.loads(rec.read_text()).get("settings") or {}).get("cell") == cell:
                    shutil.copy(rec, records / rec.name)
                    changed.append(str(records / rec.name))
            if (cells / "runs" / cell).is_dir():
                shutil.copytree(cells / "runs" / cell, records / "runs" / cell, dirs_exist_ok=True)
            shutil.copy(path, records / path.name)
            changed.append(str(records / path.name))
    if any(records.glob("knn-*.json")) or any(records.glob("linear-*.json")):
        report = build_report(records, out_dir=records)
        changed.append(str(report.markdown_path))
    print(f"ingested a window of {device} ({window.get('started', '?')}, commit "
          f"{window.get('commit', '?')}):")
    for line in changed:
        print(f"  {line}")
    parts = ", ".join(f"{p['part']} {p['status']}" for p in window.get("parts", []))
    print(f"commit message: GPU window on {device}: {parts}")
    return 0


# -------------------------------------------------------------------------------------- main
def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["ingest"]:
        p = argparse.ArgumentParser(prog="gpu_window.py ingest",
                                    description="What a window's $OUT brought back -> the docs.")
        p.add_argument("path", help="the folder that came back (files_at), or its window.tar.gz")
        p.add_argument("--plan", default=str(PLAN))
        p.add_argument("--records", default=None, help="cells' records (default: the plan's)")
        p.add_argument("--speed-root", default=str(SPEED_ROOT), help="where gpu-<kind>/ go")
        p.add_argument("--speed-doc", default=str(SPEED_DOC), help="the doc with the speed block")
        p.add_argument("--allow-smoke", action="store_true", help="ingest a CPU rehearsal")
        return ingest(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT"), help="where the three files go "
                   "(default: $OUT)")
    p.add_argument("--budget-s", type=float, default=MAX_BUDGET_S,
                   help=f"wall time of the whole window (default and most: {MAX_BUDGET_S:.0f})")
    p.add_argument("--data", default=None, help="folder holding cifar10-jpeg/ (default: "
                   "$SOLO_MIXMASK_DATA, .device/data, ../shared/data)")
    p.add_argument("--plan", default=str(PLAN))
    p.add_argument("--records", default=None, help="cells' records (default: the plan's)")
    p.add_argument("--speed-root", default=str(SPEED_ROOT),
                   help="where a device kind's speed record is looked for")
    p.add_argument("--max-cells", type=int, default=None, help="run at most this many cells")
    p.add_argument("--tick-s", type=float, default=20.0, help="refresh $OUT this often")
    p.add_argument("--cpu-smoke", action="store_true", help="the same parts, tiny, on the CPU")
    args = p.parse_args(argv)
    args.argv = argv
    if not args.out:
        raise BadInput("no --out and no $OUT: where should the window's files go?")
    if not 10 <= args.budget_s <= MAX_BUDGET_S:
        raise BadInput(f"--budget-s {args.budget_s:g}: between 10 and {MAX_BUDGET_S:.0f} (a device "
                       "command is killed at 600 s)")
    if not Path(args.plan).is_file():
        raise BadInput(f"plan {args.plan} not found")
    if args.max_cells is not None and args.max_cells < 0:
        raise BadInput(f"--max-cells {args.max_cells}: must be 0 or more")
    data_root(args.data)  # bad input before $OUT is touched
    window = Window(args)

    def on_signal(signum: int, frame: Any) -> None:
        window.hard_stop()

    signal.signal(signal.SIGTERM, on_signal)
    return window.run()


if __name__ == "__main__":
    run_main(main)
