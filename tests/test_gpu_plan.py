"""The GPU evidence plan and its script: every cell composes, and the script's CPU smoke mode runs
a GPU window end to end on real images (tests/test_gpu_window.py), so it cannot rot between GPU
windows."""

from __future__ import annotations

import json

import gpu_plan


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
