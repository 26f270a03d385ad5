"""What a training run prints: its own lines, real warnings, and none of Lightning's tips that do
not apply to this package. The runs are real ones, each in a process of its own, as a user starts
them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg

#: what must not be printed: (what, text)
NOISE = [
    ("the LitLogger advertisement", "litlogger"),
    ("Lightning's tips", "\N{ELECTRIC LIGHT BULB} Tip"),
    ("the validation_step hint", "you defined a `validation_step` but have no `val_dataloader`"),
    ("the logging-interval warning", "smaller than the logging interval"),
    ("the _pytree deprecation warning", "LeafSpec"),
    ("the TPU line", "TPU available: False"),
    ("the model summary table", "Total params"),
    ("the stepping-batches narration", "to estimate number of stepping batches"),
    ("the eval-mode modules warning", "module(s) in eval mode at the start of training"),
]


def solo_mixmask(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "solo_mixmask", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_quiet(proc: subprocess.CompletedProcess) -> str:
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed
    for what, text in NOISE:
        assert text.lower() not in printed.lower(), f"{what} is printed:\n{printed}"
    assert "Traceback" not in printed
    assert "GPU available: " in printed  # which device trains
    return printed


@pytest.fixture(scope="module")
def short_run(cifar_train, cifar_test, tmp_path_factory):
    """``solo-mixmask pretrain`` on 160 images (5 steps an epoch) with a KNN monitor, one image
    unreadable and skipped."""
    tmp = tmp_path_factory.mktemp("quiet")
    data = tmp / "data"
    for cls in sorted(p for p in cifar_train.iterdir() if p.is_dir()):
        (data / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:16]:
            shutil.copy(f, data / cls.name / f.name)
    victim = sorted((data / "cat").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])  # a real warning: the image is skipped
    cfg = tiny_cfg("simclr", data, tmp, val_path=cifar_test, data__skip_corrupt=True,
                   knn_eval={"enabled": True, "bank": "clean", "k": 5})
    del cfg["enable_model_summary"]  # as a user's config: Lightning's default
    (tmp / "run.yaml").write_text(OmegaConf.to_yaml(cfg))
    proc = solo_mixmask("pretrain", "--config-path", str(tmp), "--config-name", "run", cwd=tmp)
    lines = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    return SimpleNamespace(proc=proc, data=data, tmp=tmp,
                           run_dir=Path(lines.get("run directory", "").strip()),
                           checkpoint=lines.get("checkpoint", "").strip())


def test_a_short_pretraining_prints_its_own_lines_and_no_lightning_tips(short_run):
    assert_quiet(short_run.proc)
    assert f"skipping 1 unreadable images in {short_run.data}" in short_run.proc.stderr
    assert short_run.checkpoint and '"val_knn_acc1"' in short_run.proc.stdout
    # an epoch of 5 steps is shorter than Lightning's 50-step logging interval: the steps are
    # logged all the same
    with open(short_run.run_dir / "logs" / "version_0" / "metrics.csv", newline="") as f:
        steps = [row for row in csv.DictReader(f) if row.get("train_loss_step")]
    assert steps, "no training step was logged"


def test_a_short_linear_evaluation_prints_no_lightning_tips(short_run, cifar_train, cifar_test):
    assert short_run.proc.returncode == 0, short_run.proc.stderr
    proc = solo_mixmask(
        "linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
        "simclr.yaml", f"pretrained_feature_extractor={short_run.checkpoint}",
        "data.dataset=cifar10", f"data.train_path={cifar_train}",
        f"data.val_path={cifar_test}", "data.num_workers=0",
        "accelerator=cpu", "devices=1", "precision=32", "max_epochs=1",
        "optimizer.batch_size=64", "+enable_progress_bar=false", cwd=short_run.tmp)
    assert_quiet(proc)
    assert "linear: top-1 " in proc.stdout and "record: " in proc.stdout


def test_a_probe_on_augmented_crops_prints_no_warning_for_its_frozen_backbone(
        short_run, cifar_train, cifar_test):
    """SimSiam's probe trains on augmented crops through the frozen backbone, in eval mode on
    purpose; Lightning's warning about eval-mode modules does not apply to it."""
    assert short_run.proc.returncode == 0, short_run.proc.stderr
    proc = solo_mixmask(
        "linear", "--config-path", str(REPO / "scripts/linear/paper/cifar100"), "--config-name",
        "simsiam.yaml", f"pretrained_feature_extractor={short_run.checkpoint}",
        "data.dataset=cifar10", f"data.train_path={cifar_train}",
        f"data.val_path={cifar_test}", "data.num_workers=0", "+backbone.kwargs.width=0.125",
        "accelerator=cpu", "devices=1", "max_epochs=1", "optimizer.batch_size=64",
        "enable_progress_bar=false", cwd=short_run.tmp)
    assert not OmegaConf.load(REPO / "scripts/linear/paper/cifar100/simsiam.yaml").get(
        "features", {}).get("precompute", False)
    assert_quiet(proc)
    assert "linear: top-1 " in proc.stdout
