"""The GPU evidence plan and its script: every cell composes, and the script's CPU smoke mode runs
the first open cell end to end on real images, so it cannot rot between GPU windows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO, data_file

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_plan  # noqa: E402


def test_every_engine_cell_composes_with_the_plans_overrides(tmp_path):
    from solo_mixmask.config import load_config, parse_pretrain_cfg

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


@pytest.mark.slow
def test_cpu_smoke_runs_the_first_open_cell(tmp_path):
    data = data_file("cifar10-jpeg/train.npz").parent.parent
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_plan.py"), "next",
                           "--cpu-smoke", "--out", str(out), "--work", str(tmp_path / "work"),
                           "--records", str(tmp_path / "none"), "--data", str(data)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary-a-moco-demo.json").read_text())
    assert summary["smoke"] and not summary["complete"]  # a smoke run never closes a cell
    assert summary["device"] == "cpu" and summary["epochs"] == 1
    assert summary["published"]["epoch"] == 1 and 0 <= summary["knn_top1"] <= 100
    (record,) = [json.loads(p.read_text()) for p in out.glob("knn-*.json")]
    assert record["variant"] == "moco-demo" and record["settings"]["feature"] == "projector"
    assert (out / "runs/a-moco-demo/args.json").is_file()
    assert not list(out.rglob("*.ckpt"))  # never a checkpoint in the output
    args = json.loads((out / "runs/a-moco-demo/args.json").read_text())
    assert OmegaConf.create(args).data.format == "device"
