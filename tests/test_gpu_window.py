"""The GPU evidence plan (every cell composes, the status of the cells), and a GPU window rehearsed
on the CPU: only what travels to a lent machine (tracked and untracked-not-
ignored files, plus the folders ``prepare_device.py`` builds; no ``.git``, no ``../shared``), an
interpreter where omegaconf, hydra and solo_mixmask are not installed (``helpers/device_site``), and
the window command in its CPU smoke mode. It must calibrate and use the calibration in the same call,
record the speed figures, run cells through the linear probe, keep ``$OUT`` within what comes back
(8 plain files, 2 folders down, safe names), leave the tree untouched, keep what was done when
killed, and be ingested into the docs in one step."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import gpu_epoch
import gpu_plan
import gpu_window
import pytest
from device_env import CONFIG_WHEELS, device_slug, git_commit, out_problems

from conftest import REPO, data_file

HELPERS = Path(__file__).parent / "helpers" / "device_site"
FILES = {"window.json", "window.tar.gz", "window.log"}


def travelling_files() -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: what travels is defined by git")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


def tree_listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> dict:
    """A copy of what travels, its carried folders built by prepare_device.py."""
    data = data_file("cifar10-jpeg/train.npz").parents[1]
    base = tmp_path_factory.mktemp("device")
    root = base / "repo"
    for rel in travelling_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "prepare_device.py"),
                           "--dest", str(root), "--data", str(data)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    call = json.loads(proc.stdout.split("device call:\n", 1)[1])
    mib = re.search(r"= ([\d.]+) MiB of 64 MiB", proc.stdout)
    return {"root": root, "base": base, "data": data, "call": call, "stdout": proc.stdout,
            "travel_mib": float(mib.group(1))}


def device_env(device: dict, name: str) -> dict[str, str]:
    tmp = device["base"] / f"tmp-{name}"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLO_MIXMASK")}
    env.update(PYTHONPATH=str(HELPERS), TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    return env


def window_command(device: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "benchmarks/gpu_window.py", "--cpu-smoke", "--out", str(out), *extra]


def archive(out: Path) -> dict[str, bytes]:
    with tarfile.open(out / "window.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_prepare_device_builds_what_travels_and_prints_the_call(device):
    root = device["root"]
    wheels = {f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
              for name, version in CONFIG_WHEELS.items()}
    assert {p.name for p in (root / ".whl").iterdir()} == wheels
    for split in ("train.npz", "test.npz"):
        carried = root / ".device" / "data" / "cifar10-jpeg" / split
        assert carried.read_bytes() == (device["data"] / "cifar10-jpeg" / split).read_bytes()
    assert (root / ".device" / "commit").read_text().strip() == git_commit(REPO, untracked=True)
    assert device["call"]["carry"] == [".whl", ".device"] and device["call"]["timeout_s"] <= 600
    assert "benchmarks/gpu_window.py" in device["call"]["command"]
    assert len(device["call"]["command"]) <= 2000
    assert 18 < device["travel_mib"] < 64


def test_device_names_and_out_rules(tmp_path):
    names = gpu_epoch.all_variants(["mocov2plus"], ["device"], [False, True], rounds=2)
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", n) for n in names) and len(set(names)) == 4
    assert [gpu_epoch.parse_variant(n)[3] for n in names] == ["", "", ".r2", ".r2"]
    assert [device_slug(d) for d in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "cpu (x86_64)")] == [
        "h200", "h100", "cpu"]
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "ok.json").write_text("{}")
    assert out_problems(tmp_path) == []
    (tmp_path / "a" / "b" / "c" / "deep.csv").write_text("")
    (tmp_path / "bad#name.json").write_text("")
    for i in range(7):
        (tmp_path / f"f{i}.log").write_text("")
    problems = "; ".join(out_problems(tmp_path))
    assert "more than 2 folders down" in problems and "unsafe name" in problems
    assert "10 files (at most 8 come back)" in problems


@pytest.fixture(scope="module")
def window(device) -> dict:
    """One full rehearsal: calibration, speed, a cell."""
    root, out = device["root"], device["base"] / "out-full"
    before = tree_listing(root)
    proc = subprocess.run(window_command(device, out, "--budget-s", "240", "--max-cells", "1"),
                          cwd=root, env=device_env(device, "full"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {"out": out, "before": before, "after": tree_listing(root), "stdout": proc.stdout,
            "tmp": device["base"] / "tmp-full"}


@pytest.mark.slow
@pytest.mark.long  # a window run on the CPU (about a minute); CI's long run
def test_window_calibrates_measures_and_runs_cells_through_the_probe(device, window):
    out = window["out"]
    assert {p.name for p in out.iterdir()} == FILES and out_problems(out) == []
    state = json.loads((out / "window.json").read_text())
    assert state["complete"] and state["smoke"] and state["device"] == "cpu"
    assert state["commit"] == (device["root"] / ".device" / "commit").read_text().strip()
    assert state["data"] == str(device["root"] / ".device" / "data")
    assert str(window["tmp"]) in state["config_libs"]  # omegaconf came from the carried wheels
    parts = {p["part"]: p for p in state["parts"]}
    assert list(parts)[:2] == ["calibrate", "speed"]
    cal = parts["calibrate"]["summary"]
    assert parts["calibrate"]["status"] == "done" and cal["proposed_epochs"] >= 1
    assert state["epochs"] == cal["proposed_epochs"]
    assert state["epochs_source"] == "calibrated in this window"
    assert cal["linear_top1"] is not None and cal["probe_seconds"] > 0
    assert parts["speed"]["summary"]["complete"], parts["speed"]
    assert len(parts["speed"]["summary"]["variants"]) == len(gpu_window.SPEED_VARIANTS) == 7
    speed = json.loads(archive(out)["speed/gpu_epoch.json"])
    assert speed["torch"] and speed["commit"] == state["commit"] and speed["device"].startswith("cpu")
    assert speed["settings"]["steps_per_epoch"] == 50_000 // speed["settings"]["batch"]
    assert "cudnn_benchmark" not in speed["settings"]  # recorded where each variant ran
    assert list(speed["variants"]) == list(gpu_window.SPEED_VARIANTS)
    for name, r in speed["variants"].items():
        assert isinstance(r["cudnn_benchmark"], bool) and r["steps"] == speed["settings"]["timed_steps"]
        for key in ("epoch_s", "step_s", "images_per_s", "data_share", "peak_mem_gib", "tflops",
                    "bandwidth_tb_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, key)
        assert r["data_share"] < 1 and r["epoch_s"] == pytest.approx(r["step_s"] * 1562)
    eager = speed["variants"]["mixmask_mocov2plus/device/eager"]
    assert eager["flops_per_step"] > speed["variants"]["mocov2plus/device/eager"]["flops_per_step"]
    assert set(speed["ratios"]) == {  # side by side, each pair measured in this run
        "mocov2plus/eager: image_folder / device", "mixmask_mocov2plus/eager: image_folder / device",
        "device/eager: MixMask / vanilla", "image_folder/eager: MixMask / vanilla",
        "mocov2plus/device: eager / compile", "mixmask_mocov2plus/device: eager / compile",
        "device/compile: MixMask / vanilla", "mixmask_mocov2plus/eager: device / device_ahead"}
    cells = [p for p in state["parts"] if p["part"].startswith("cell:") and p["status"] == "done"]
    assert [p["part"] for p in cells] == ["cell:a-moco-demo"]
    assert state["parts"][-1] == {"part": "cell:moco-vanilla-s0",
                                  "status": "skipped: --max-cells 1 reached"}
    files = archive(out)
    assert "calibration/calibration.json" in files and "speed/gpu_epoch.json" in files
    for part in cells:
        cell = part["part"][5:]
        summary = json.loads(files[f"cells/summary-{cell}.json"])
        assert summary == part["summary"]
        assert summary["smoke"] and not summary["complete"]  # a smoke run never closes a cell
        assert summary["linear_top1"] is not None and 0 <= summary["knn_top1"] <= 100
        assert isinstance(summary["cudnn_benchmark"], bool)
        assert f"cells/runs/{cell}/metrics.csv" in files and f"cells/runs/{cell}/args.json" in files
        args = json.loads(files[f"cells/runs/{cell}/args.json"])
        assert args["data"]["format"] == "device"
    linear = [json.loads(v) for k, v in files.items() if k.startswith("cells/linear-")]
    assert len(linear) == 1
    for record in linear:  # the probe's record names the checkpoint file it evaluated
        assert re.fullmatch(r"[0-9a-f]{64}", record["checkpoint_sha256"])
        assert record["checkpoint"].endswith(".ckpt")
    demo = json.loads(files["cells/summary-a-moco-demo.json"])
    assert demo["published"]["epoch"] == 1
    knn = [json.loads(v) for k, v in files.items() if k.startswith("cells/knn-")]
    assert [r["variant"] for r in knn] == ["moco-demo"]
    assert not any(k.endswith(".ckpt") for k in files)
    assert window["after"] == window["before"]  # nothing written into the tree


@pytest.mark.slow
@pytest.mark.long  # a window run on the CPU (half a minute); CI's long run
def test_window_killed_part_way_keeps_what_was_done(device, tmp_path):
    """The plan's E is fixed and this device kind has its speed record, so the window goes
    straight to the cells, their cost estimated from the records' calibration. SIGKILL while the
    second cell runs: the first cell's records are in $OUT, the second cell's summary says it did
    not finish, and no process of the window is left."""
    root, out = device["root"], tmp_path / "out"
    plan = tmp_path / "plan.yaml"
    plan.write_text(re.sub(r"(?m)^epochs: null", "epochs: 1",
                           (root / "benchmarks" / "gpu_plan.yaml").read_text()))
    records = tmp_path / "records"
    records.mkdir()
    (records / "calibration.json").write_text(json.dumps(
        {"fixed_seconds": 5, "seconds_per_epoch": 1, "probe_seconds": 1, "margin_s": 5}))
    speed = tmp_path / "speed" / "gpu-cpu" / "gpu_epoch.json"
    speed.parent.mkdir(parents=True)
    speed.write_text("{}")
    proc = subprocess.Popen(window_command(device, out, "--budget-s", "240", "--tick-s", "0.3",
                                           "--plan", str(plan), "--records", str(records),
                                           "--speed-root", str(tmp_path / "speed")),
                            cwd=root, env=device_env(device, "kill"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    second = "cell:moco-vanilla-s0"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                files = archive(out)
            except (OSError, tarfile.TarError, EOFError):
                files = {}
            state = json.loads(files.get("window.json", b"{}"))
            running = [p["part"] for p in state.get("parts", []) if p.get("status") == "running"]
            if running == [second] and "cells/summary-moco-vanilla-s0.json" in files:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the second cell never showed up running")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert {p.name for p in out.iterdir()} == FILES and out_problems(out) == []
    files = archive(out)
    state = json.loads((out / "window.json").read_text())
    assert not state["complete"] and state["epochs"] == 1 and state["epochs_source"] == "plan"
    assert [p["part"] for p in state["parts"]] == ["cell:a-moco-demo", second]
    assert state["parts"][0]["status"] == "done"
    first = json.loads(files["cells/summary-a-moco-demo.json"])
    assert first["epochs"] == 1 and first["linear_top1"] is not None
    assert any(k.startswith("cells/knn-mocov2plus-moco-demo") for k in files)
    cell = json.loads(files["cells/summary-moco-vanilla-s0.json"])
    assert cell["complete"] is False and "did not finish" in cell["reason"]
    time.sleep(1)
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "gpu_plan.py" in text and str(device["base"]) in text:
            alive.append(text)
    assert not alive  # the parts die with the window


@pytest.mark.slow
@pytest.mark.long  # a window run on the CPU (half a minute); CI's long run
def test_ingest_puts_a_window_into_the_docs_and_renders_the_report(device, window, tmp_path):
    plan = tmp_path / "gpu_plan.yaml"
    shutil.copy(REPO / "benchmarks" / "gpu_plan.yaml", plan)
    doc = tmp_path / "speed.md"
    shutil.copy(REPO / "docs" / "speed.md", doc)
    records, speed_root = tmp_path / "records", tmp_path / "results"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_window.py"), "ingest", str(window["out"]),
           "--plan", str(plan), "--records", str(records), "--speed-root", str(speed_root),
           "--speed-doc", str(doc)]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert "smoke" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not records.exists() and plan.read_text() == (REPO / "benchmarks/gpu_plan.yaml").read_text()
    proc = subprocess.run(cmd + ["--allow-smoke"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((window["out"] / "window.json").read_text())
    proposed = state["epochs"]
    assert re.search(rf"(?m)^epochs: {proposed}  # fixed by the calibration on cpu", plan.read_text())
    assert json.loads((records / "calibration.json").read_text())["proposed_epochs"] == proposed
    assert (records / "summary-a-moco-demo.json").is_file()
    assert (records / "runs" / "a-moco-demo" / "metrics.csv").is_file()
    assert len(list(records.glob("knn-*.json"))) == 1 and len(list(records.glob("linear-*.json"))) == 1
    report = (records / "report.md").read_text()
    assert "moco-demo" in report and (records / "curves.png").is_file()
    speed = json.loads((speed_root / "gpu-cpu" / "gpu_epoch.json").read_text())
    assert len(speed["variants"]) == 7
    text = doc.read_text()
    block = text.split("<!-- gpu_window:speed begin -->")[1].split("<!-- gpu_window:speed end -->")[0]
    assert f"#### {speed['device']}" in block and "| mixmask_mocov2plus | device | on |" in block
    assert "commit message: GPU window on cpu" in proc.stdout


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.mark.parametrize("argv, names", [
    (["gpu_plan.py", "next", "--plan", "{tmp}/missing.yaml"], "missing.yaml not found"),
    (["gpu_plan.py", "next", "--cpu-smoke", "--data", "{tmp}/nodata", "--out", "{tmp}/out"],
     "nodata: no cifar10-jpeg"),
    (["gpu_plan.py", "next", "--cell", "moco-vanila-s0", "--out", "{tmp}/out"],
     "no cell 'moco-vanila-s0'"),
    (["gpu_plan.py", "next", "--epochs", "0", "--out", "{tmp}/out"], "--epochs 0"),
    (["gpu_plan.py", "next", "--out", "{tmp}/out", "--records", "{tmp}/none"],
     "epochs is not fixed yet"),
    (["gpu_window.py", "--out", "{tmp}/out", "--budget-s", "900"], "--budget-s 900"),
    (["gpu_window.py", "--out", "{tmp}/out", "--data", "{tmp}/nodata"], "nodata: no cifar10-jpeg"),
    (["gpu_window.py", "--out", "{tmp}/out", "--plan", "{tmp}/plan.yml"], "plan.yml not found"),
    (["gpu_window.py", "ingest", "{tmp}/nothing"], "no window.tar.gz"),
    (["gpu_epoch.py", "--cpu-smoke", "--out", "{tmp}/out", "--variants", "moco/device/eager"],
     "variant 'moco/device/eager'"),
])
def test_bad_input_is_one_error_line_and_leaves_nothing(tmp_path, argv, names):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = run_script(str(REPO / "benchmarks" / argv[0]), *argv[1:])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_cell_stopped_by_its_time_limit_says_so(tmp_path):
    """The limit is checked at every step, not only at epoch ends: the cell stops in its first
    epoch, with a checkpoint and a KNN at the stopping point, and a partial summary."""
    data = data_file("cifar10-jpeg/train.npz").parents[1]
    out = tmp_path / "out"
    proc = run_script(str(REPO / "benchmarks" / "gpu_plan.py"), "next", "--cpu-smoke", "--cell",
                      "moco-mixmask-s0", "--limit-s", "1", "--out", str(out), "--work",
                      str(tmp_path / "work"), "--data", str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary-moco-mixmask-s0.json").read_text())
    assert summary["complete"] is False and summary["reason"].startswith("time limit in epoch 1")
    assert summary["epochs"] == 0 and 0 <= summary["knn_top1"] <= 100
    assert summary["linear_top1"] is None and "probe_skipped" in summary
    assert list((tmp_path / "work" / "runs" / "moco-mixmask-s0").rglob("*-ep=0*.ckpt"))
    assert out_problems(out) == []


def test_every_engine_cell_composes_with_the_plans_overrides(tmp_path):
    from solo_mixmask.config import load_config
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    plan = gpu_plan.load_plan()
    ns = type("Args", (), {"work": str(tmp_path), "cpu_smoke": False})()
    variants = {}
    for cell in plan.cells:
        if cell.get("runner"):
            assert cell.solo_config.endswith(".yaml")
            continue
        epochs = 10
        overrides = gpu_plan.engine_overrides(plan, cell, epochs, tmp_path, tmp_path, ns)
        overrides = [o.replace("accelerator=gpu", "accelerator=cpu").replace(
            "precision=bf16-mixed", "precision=32") for o in overrides]
        cfg = parse_pretrain_cfg(load_config(str(gpu_plan.PAPER), str(cell.config), overrides))
        assert cfg.optimizer.batch_size == 512 and cfg.data.format == "device"
        assert cfg.max_epochs == int(cell.get("schedule_epochs") or epochs)
        assert epochs % cfg.knn_eval.frequency == 0  # KNN at the budget's last epoch
        variants[cell.id] = cfg
    demo = variants["a-moco-demo"]
    assert not demo.method_kwargs.symmetric and demo.max_epochs == 200  # the demo's schedule
    assert variants["moco-vanilla-s0"].method_kwargs.symmetric_loss == "sum"
    assert variants["moco-mixmask-s1"].seed == 1
    ids = [c.id for c in plan.cells]
    assert ids[0] == "a-moco-demo" and ids.index("moco-vanilla-s0") < ids.index("moco-mixmask-s0")


def test_status_lists_the_open_cells(tmp_path, capsys):
    records = tmp_path / "records"
    records.mkdir()
    (records / "summary-moco-vanilla-s0.json").write_text(json.dumps(
        {"cell": "moco-vanilla-s0", "complete": True}))
    (records / "summary-moco-mixmask-s0.json").write_text(json.dumps(
        {"cell": "moco-mixmask-s0", "complete": False}))  # stopped by the limit: still open
    gpu_plan.main(["status", "--records", str(records)])
    out = capsys.readouterr().out
    assert "[x] moco-vanilla-s0" in out and "[ ] moco-mixmask-s0" in out
    assert f"1 of {len(gpu_plan.load_plan().cells)} cells done" in out
