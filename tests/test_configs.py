"""Every shipped config composes and passes validation, its name says its variant; launchers call
the CLI; the README's laptop command runs. Each config's first training step is pinned by
tests/test_golden_steps.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from solo_mixmask.config import load_config
from solo_mixmask.config.datasets import DATASETS
from solo_mixmask.engine.pretrain import parse_pretrain_cfg

CONFIGS = sorted((REPO / "scripts" / "pretrain").glob("*/*.yaml")) + sorted(
    (REPO / "scripts" / "pretrain" / "paper").glob("*/*.yaml"))
IDS = [str(p.relative_to(REPO / "scripts" / "pretrain")) for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_shipped_pretrain_config_is_valid(path):
    cfg = parse_pretrain_cfg(load_config(str(path.parent), path.name))
    assert cfg.data.dataset in DATASETS
    stem = path.stem
    if "_" in stem:  # a MixMask-family variant of the method named first
        base = stem.split("_")[0]
        assert cfg.method == f"mixmask_{base}"
        kw = cfg.method_kwargs
        variant = stem[len(base) + 1:]
        assert kw.mixmask.enabled == (variant != "unmix")
        assert kw.unmix.enabled == (variant in ("unmix", "mixmask_star"))
        assert (kw.mixmask.fill != "mix") == (variant == "erase")
        expected_grid = {"cifar": 2, "cifar100": 2, "tiny-imagenet": 4,
                         "imagenet": 8}[path.parent.name]
        if kw.mixmask.enabled:
            assert kw.mixmask.grid == expected_grid and kw.mixmask.pattern == "blocked"
            assert kw.mixmask.ratio == 0.5
        if variant == "mixmask_star":
            assert kw.mixmask.permutation == "random"
    else:
        assert cfg.method == stem


def test_imagenet_mixmask_moco_matches_the_paper():
    cfg = parse_pretrain_cfg(load_config(str(REPO / "scripts/pretrain/imagenet"),
                                         "mocov2plus_mixmask.yaml"))
    kw = cfg.method_kwargs
    assert cfg.backbone.name == "resnet50" and cfg.max_epochs == 200
    assert cfg.optimizer.batch_size == 256 and cfg.optimizer.lr == pytest.approx(0.03)
    assert kw.temperature == 0.2 and kw.queue_size == 65536 and not kw.symmetric
    assert cfg.momentum.base_tau == cfg.momentum.final_tau == 0.999
    assert kw.mixmask.grid == 8


def test_every_pretrain_folder_has_a_launcher_per_method():
    folders = [f for f in sorted((REPO / "scripts" / "pretrain").iterdir()) if f.name != "paper"]
    folders += sorted((REPO / "scripts" / "pretrain" / "paper").iterdir())
    for folder in folders:
        methods = sorted(p.stem for p in folder.glob("*.yaml") if "_" not in p.stem)
        assert {"mocov2plus", "byol", "simclr"} <= set(methods), folder
        for method in methods:
            script = folder / f"{method}.sh"
            assert script.is_file() and os.access(script, os.X_OK), script
            assert "solo-mixmask pretrain" in script.read_text()


def test_launcher_runs_the_cli_with_variant_and_overrides(tmp_path):
    # a fake solo-mixmask on PATH records what the launcher executes
    fake = tmp_path / "solo-mixmask"
    fake.write_text('#!/bin/sh\necho "$@" > "$RECORD"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
           "RECORD": str(tmp_path / "args")}
    script = REPO / "scripts/pretrain/cifar/byol.sh"
    subprocess.run(["bash", str(script), "mixmask", "optimizer.lr=0.5"], check=True, env=env)
    args = (tmp_path / "args").read_text().split()
    assert args[:1] == ["pretrain"] and "byol_mixmask.yaml" in args and args[-1] == "optimizer.lr=0.5"


@pytest.mark.slow
def test_console_script_on_real_images_writes_checkpoint_and_args(cifar_train, cifar_test,
                                                                   tmp_path):
    from omegaconf import OmegaConf

    from conftest import tiny_cfg

    cfg = tiny_cfg("mixmask_simsiam", cifar_train, tmp_path, val_path=cifar_test,
                   limit_train_batches=1, knn_eval__enabled=True)
    (tmp_path / "run.yaml").write_text(OmegaConf.to_yaml(cfg))
    proc = subprocess.run([sys.executable, "-m", "solo_mixmask", "pretrain", "--config-path",
                           str(tmp_path), "--config-name", "run", "optimizer.lr=0.1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dirs = list((tmp_path / "trained_models" / "mixmask_simsiam").iterdir())
    assert len(run_dirs) == 1
    files = {p.name for p in run_dirs[0].iterdir()}
    assert "args.json" in files and any(f.endswith("-ep=0.ckpt") for f in files)
    metrics = Path(run_dirs[0] / "logs" / "version_0" / "metrics.csv").read_text()
    assert "val_knn_acc1" in metrics and "train_mixmask_lambda" in metrics


def test_help_lists_every_command(capsys):
    from solo_mixmask.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_the_readme_laptop_command_runs(cifar_train, cifar_test, tmp_path, monkeypatch, capsys):
    """The README's "run any config on a laptop" command, as written there."""
    from solo_mixmask.cli import main

    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- laptop -->")[1].split("```bash")[1].split("```")[0]
    command = " ".join(line.rstrip("\\").strip() for line in block.strip().splitlines())
    argv = command.replace("./datasets/cifar10/train", str(cifar_train)).replace(
        "./datasets/cifar10/val", str(cifar_test)).replace(
        " scripts/", f" {REPO}/scripts/").split()  # the README runs from the repository root
    assert argv[0] == "solo-mixmask"
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:] + ["checkpoint.dir=runs", "enable_progress_bar=false"]) == 0, \
        capsys.readouterr().err
    assert list((tmp_path / "runs").rglob("*-ep=0.ckpt"))


@pytest.mark.parametrize("overrides,expected", [
    ([], True),  # auto: true on every accelerator, the CPU included (docs/speed.md)
    (["performance.channels_last=false"], False),
    (["performance.channels_last=true", "performance.disable_channel_last=true"], False),
])
def test_the_model_lays_out_images_as_the_parsed_config_says(overrides, expected, tmp_path):
    """channels_last is decided once, by the config parse; the model follows the parsed value (it
    used to derive ``auto`` again, from the accelerator, and disagree on the CPU)."""
    from solo_mixmask.engine.pretrain import build_model

    cfg = parse_pretrain_cfg(load_config(str(REPO / "scripts/pretrain/cifar"), "simclr.yaml", [
        f"data.train_path={tmp_path}", "data.val_path=null", "knn_eval.enabled=false",
        "accelerator=cpu", "devices=1", "backbone.kwargs.width=0.25", *overrides]))
    assert cfg.performance.channels_last in (True, False)
    model = build_model(cfg)
    x = model.to_input(torch.rand(2, 3, 32, 32))
    assert model.channels_last is expected
    assert x.is_contiguous(memory_format=torch.channels_last) is expected
