"""Every shipped linear / semi-supervised config composes and passes validation; the launchers are
valid bash and pass the checkpoint through."""

from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import REPO
from solo_mixmask.config import load_config
from solo_mixmask.errors import ConfigError
from solo_mixmask.eval.linear import parse_linear_cfg
from solo_mixmask.eval.semi import parse_semi_cfg

LINEAR = sorted((REPO / "scripts/linear").glob("*/*.yaml"))
SEMI = sorted((REPO / "scripts/semi").glob("*/*.yaml"))
LAUNCHERS = sorted((REPO / "scripts").glob("linear/*/linear.sh")) + sorted(
    (REPO / "scripts").glob("semi/*/*.sh"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "name-abc-ep=99.ckpt"  # '=' as in real names
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    return path


def test_every_dataset_has_configs_and_launchers():
    assert {p.parent.name for p in LINEAR} == {"cifar", "tiny-imagenet", "imagenet-100",
                                               "imagenet", "custom"}
    assert {p.name for p in LINEAR if p.parent.name == "cifar"} == {
        "mocov2plus.yaml", "byol.yaml", "simclr.yaml", "simsiam.yaml"}
    assert {p.parent.name for p in SEMI} == {"cifar", "tiny-imagenet", "imagenet-100", "imagenet"}
    assert all(p.stat().st_mode & 0o111 for p in LAUNCHERS) and len(LAUNCHERS) == 9


@pytest.mark.parametrize("path", LINEAR + SEMI, ids=lambda p: f"{p.parent.parent.name}/"
                         f"{p.parent.name}/{p.name}")
def test_config_parses(path, checkpoint):
    overrides = [f"pretrained_feature_extractor={checkpoint}"]  # '=' in the name, unquoted
    cfg = load_config(str(path.parent), path.name, overrides)
    if path.parent.parent.name == "semi":
        cfg = parse_semi_cfg(cfg)
        assert cfg.semi.fraction in (0.01, 0.1)
    else:
        cfg = parse_linear_cfg(cfg)
    assert cfg.pretrained_feature_extractor == str(checkpoint)
    assert cfg.max_epochs == 100 and cfg.finetune is False
    assert cfg.optimizer.lr == pytest.approx(cfg.optimizer.lr_scale * load_config(
        str(path.parent), path.name, overrides).optimizer.lr)
    crop = {"cifar": 32, "tiny-imagenet": 64}.get(path.parent.name, 224)
    assert cfg.data.augmentations.crop_size == crop


def test_imagenet_mocov2_follows_the_moco_protocol(checkpoint):
    cfg = load_config(str(REPO / "scripts/linear/imagenet"), "mocov2plus.yaml",
                      [f"pretrained_feature_extractor={checkpoint}"])
    assert (cfg.optimizer.lr, cfg.optimizer.batch_size, cfg.optimizer.weight_decay) == (30.0, 256, 0)
    assert list(cfg.scheduler.lr_decay_steps) == [60, 80] and cfg.backbone.name == "resnet50"


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: f"{p.parent.parent.name}/"
                         f"{p.parent.name}/{p.name}")
def test_launcher(path, tmp_path):
    """Run with a stub ``solo-mixmask`` on PATH that prints what it is given."""
    stub = tmp_path / "solo-mixmask"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    first = "mocov2plus" if path.parent.parent.name == "linear" else "10"
    out = subprocess.run(["bash", str(path), first, "ck-ep=1.ckpt", "max_epochs=5"], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    name = "mocov2plus.yaml" if first == "mocov2plus" else "10pct.yaml"
    assert out == [path.parent.parent.name, "--config-path", str(path.parent), "--config-name",
                   name, "pretrained_feature_extractor=ck-ep=1.ckpt", "max_epochs=5"]
    usage = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


PAPER_LINEAR = sorted((REPO / "scripts/linear/paper").glob("*/*.yaml"))


@pytest.mark.parametrize("path", PAPER_LINEAR, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_paper_evaluation_configs_follow_their_code_bases(path, checkpoint):
    cfg = parse_linear_cfg(load_config(str(path.parent), path.name,
                                       [f"pretrained_feature_extractor={checkpoint}"]))
    if path.stem in ("byol", "simclr"):  # W-MSE's eval/sgd.py
        assert cfg.features.precompute and cfg.features.probe == "wmse"
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.batch_size) == ("adam", 0.01, 1000)
        assert cfg.optimizer.weight_decay == 5e-6 and cfg.max_epochs == 500
        assert cfg.scheduler.min_lr == 1e-6
    else:  # PatrickHua/SimSiam's linear_eval.py
        assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.max_epochs) == ("sgd", 30.0, 100)
        assert cfg.scheduler.name == "cosine" and not cfg.features.precompute


def test_paper_knn_launcher_passes_each_methods_protocol(tmp_path):
    fake = tmp_path / "solo-mixmask"
    fake.write_text('#!/bin/sh\necho "$@" > "$RECORD"\n')
    fake.chmod(0o755)
    import os

    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
           "RECORD": str(tmp_path / "args")}
    script = REPO / "scripts/linear/paper/knn.sh"
    expected = {"mocov2plus": "--feature projector", "byol": "--vote majority",
                "simclr": "--distance euclidean", "simsiam": "--distance cosine"}
    for method, flag in expected.items():
        subprocess.run(["bash", str(script), method, "c.ckpt", "train", "val"], check=True,
                       env=env)
        args = (tmp_path / "args").read_text()
        assert args.startswith("knn c.ckpt --train-path train --val-path val") and flag in args
    bad = subprocess.run(["bash", str(script), "swav", "c.ckpt", "train", "val"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown method 'swav'")


@pytest.mark.parametrize("folder", ["cifar100", "tiny-imagenet"])
def test_paper_linear_launcher(folder, tmp_path):
    stub = tmp_path / "solo-mixmask"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    path = REPO / "scripts/linear/paper" / folder / "linear.sh"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    out = subprocess.run(["bash", str(path), "byol", "ck-ep=1.ckpt"], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["linear", "--config-path", str(path.parent), "--config-name", "byol.yaml",
                   "pretrained_feature_extractor=ck-ep=1.ckpt"]


@pytest.mark.parametrize("kind", ["linear", "semi"])
def test_an_unnamed_run_is_named_after_its_kind_and_dataset(kind, checkpoint):
    folder = REPO / "scripts" / kind / "cifar"
    name = sorted(folder.glob("*.yaml"))[0].name
    cfg = load_config(str(folder), name, [f"pretrained_feature_extractor={checkpoint}", "~name"])
    cfg = (parse_semi_cfg if kind == "semi" else parse_linear_cfg)(cfg)
    assert cfg.name == f"{kind}-{cfg.data.dataset}"


@pytest.mark.parametrize("override,message", [
    ("seed=-1", "seed=-1: must be at least 0"),
    ("semi.seed=-3", "semi.seed=-3: must be at least 0"),
    ("semi.seed=4294967296", "semi.seed=4294967296: must be at most 4294967295"),
])
def test_a_seed_numpy_cannot_take_is_a_config_error(override, message, checkpoint):
    path = REPO / "scripts/semi/cifar/1pct.yaml"
    cfg = load_config(str(path.parent), path.name,
                      [f"pretrained_feature_extractor={checkpoint}", override])
    with pytest.raises(ConfigError, match=message):
        parse_semi_cfg(cfg)
