"""benchmarks/gpu_epoch.py: its CPU smoke mode runs every variant (both data formats, compile off and
on, vanilla and MixMask MoCo v2 in the paper's form) on real CIFAR-10 images, so the GPU command cannot
rot between GPU windows."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, data_file

POSITIVE = ("epoch_s", "step_s", "images_per_s", "data_share", "peak_mem_gib", "tflops",
            "bandwidth_tb_s")


@pytest.mark.slow
def test_cpu_smoke_reports_every_variant(tmp_path):
    data = data_file("cifar10-jpeg/train.npz").parents[1]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_epoch.py"), "--cpu-smoke", "--out", str(out),
         "--data", str(data), "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu_epoch.json").read_text())
    assert res["torch"] and res["commit"] and res["device"].startswith("cpu")
    assert res["settings"]["steps_per_epoch"] == 50_000 // res["settings"]["batch"]
    expected = {f"{m}/{f}/{c}" for m in ("mocov2plus", "mixmask_mocov2plus")
                for f in ("image_folder", "device") for c in ("eager", "compile")}
    assert set(res["variants"]) == expected
    for name, r in res["variants"].items():
        assert "error" not in r, (name, r.get("error"))
        for key in POSITIVE:
            value = r[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, key, value)
        assert r["steps"] == res["settings"]["timed_steps"]
        assert r["data_share"] < 1 and r["epoch_s"] == pytest.approx(r["step_s"] * 1562)
    eager = res["variants"]["mixmask_mocov2plus/device/eager"]
    vanilla = res["variants"]["mocov2plus/device/eager"]
    assert eager["flops_per_step"] > vanilla["flops_per_step"]  # MixMask's extra forward+backward
    assert len(res["ratios"]) == 12
    assert "| mixmask_mocov2plus | device | on |" in proc.stdout
