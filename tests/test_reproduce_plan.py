"""The reproduction plan (benchmarks/reproduce.yaml): every method x variant builds a valid
pretraining config of that variant, and variants differ only in their method_kwargs."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from solo_mixmask.config.pretrain import parse_pretrain_cfg
from solo_mixmask.eval.records import variant_of

spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)
PLAN = OmegaConf.load(REPO / "benchmarks" / "reproduce.yaml")
PAPER = OmegaConf.load(REPO / "benchmarks" / "reproduce_paper.yaml")
PLANS = [(PLAN, m) for m in PLAN.methods] + [(PAPER, m) for m in PAPER.methods]


def build(method, variant, tmp_path, overrides=(), plan=PLAN):
    cfg = reproduce.pretrain_config(plan, method, variant, 0, tmp_path, tmp_path, tmp_path,
                                    list(overrides))
    return OmegaConf.to_container(parse_pretrain_cfg(cfg), resolve=True)


@pytest.mark.parametrize("plan,method", PLANS, ids=[f"{'paper' if p is PAPER else 'solo'}-{m}"
                                                    for p, m in PLANS])
def test_every_variant_is_what_its_name_says(plan, method, tmp_path):
    built = {v: build(method, v, tmp_path, plan=plan) for v in plan.variants}
    for variant, cfg in built.items():
        assert variant_of(cfg) == variant
    vanilla = built.pop("vanilla")
    for cfg in built.values():  # same seed, data, augmentations, optimizer and budget
        for key in ("seed", "augmentations", "optimizer", "max_epochs", "backbone", "data"):
            assert cfg[key] == vanilla[key], key


def test_overrides_reach_the_branch(tmp_path):
    cfg = build("mocov2plus", "mixmask", tmp_path, ["method_kwargs.mixmask.grid=4"])
    assert cfg["method_kwargs"]["mixmask"]["grid"] == 4


@pytest.mark.parametrize("argv,message", [
    (["--variant", "cutout"], "unknown variant 'cutout'"),
    (["--method", "byolx"], "unknown method 'byolx'"),
    (["--config", "no-such-plan.yaml"], "no such plan file"),
    (["--config", "README.md"], "not a readable YAML plan"),
    (["--resum"], "unrecognized arguments: --resum"),  # no prefix matching to --resume
    (["max_epochz=3"], "unknown key 'max_epochz'"),
])
def test_bad_input_is_refused_before_anything_is_unpacked(argv, message, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(reproduce.BadInput, match=message):
        reproduce.main([*argv, "--work", str(work)])
    assert not work.exists()


def test_bad_input_is_one_error_line_and_exit_code_2(tmp_path):
    import subprocess

    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "--method",
                          "byolx", "--work", str(tmp_path / "w")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: unknown method 'byolx': ['mocov2plus', 'byol']"]


def test_overrides_after_a_list_option_are_not_seeds():
    args = reproduce.parse_args(["--variant", "vanilla", "mixmask", "--seed", "0", "1",
                                 "max_epochs=100", "method_kwargs.mixmask.ratio=[0.3,0.7]"])
    assert args.seed == [0, 1] and args.variant == ["vanilla", "mixmask"]
    assert args.overrides == ["max_epochs=100", "method_kwargs.mixmask.ratio=[0.3,0.7]"]


def test_threads_option_sets_torch_threads_and_refuses_zero(capsys):
    import torch

    before = torch.get_num_threads()
    args = reproduce.parse_args(["--seed", "1", "--threads", "1", "max_epochs=2"])
    assert args.threads == 1 and args.seed == [1] and args.overrides == ["max_epochs=2"]
    with pytest.raises(reproduce.BadInput, match="--threads 0"):
        reproduce.main(["--threads", "0"])
    try:
        with pytest.raises(reproduce.BadInput):  # threads are set before the variant check refuses
            reproduce.main(["--threads", "1", "--variant", "cutout"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_paper_plan_is_the_paper_config_at_small_scale(tmp_path):
    """reproduce_paper.yaml runs scripts/pretrain/paper/cifar100's MoCo recipe; only the budget,
    the width, the queue (a fifth of the data) and the KNN frequency are scaled down."""
    from solo_mixmask.config import load_config

    for variant in PAPER.variants:
        small = build("mocov2plus", variant, tmp_path, plan=PAPER)
        name = "mocov2plus" if variant == "vanilla" else f"mocov2plus_{variant}"
        full = OmegaConf.to_container(parse_pretrain_cfg(load_config(
            str(REPO / "scripts/pretrain/paper/cifar100"), name,
            [f"data.train_path={tmp_path}", "data.val_path=null", "knn_eval.enabled=false"])))
        kw_small, kw_full = dict(small["method_kwargs"]), dict(full["method_kwargs"])
        assert kw_small.pop("queue_size") == 1024 and kw_full.pop("queue_size") == 4096
        assert kw_small == kw_full, variant
        assert small["augmentations"] == full["augmentations"]
        assert small["momentum"] == full["momentum"]
        for key in ("name", "weight_decay", "kwargs"):
            assert small["optimizer"][key] == full["optimizer"][key], key
        assert small["optimizer"]["lr"] / small["optimizer"]["lr_scale"] == pytest.approx(
            full["optimizer"]["lr"] / full["optimizer"]["lr_scale"])
        assert small["scheduler"] == full["scheduler"]
        assert (small["data"]["mean"], small["data"]["std"]) == (full["data"]["mean"],
                                                                 full["data"]["std"])
        assert small["knn_eval"]["feature"] == full["knn_eval"]["feature"] == "projector"
        assert small["backbone"]["kwargs"]["cifar_stem"] is True


def test_resume_finds_the_stopped_run_and_its_time(tmp_path):
    """--resume: the stopped run of the same config is found, with the seconds from its start to its
    last checkpoint; another seed's run is not taken for it."""
    import json
    import os

    cfg = reproduce.pretrain_config(PAPER, "mocov2plus", "mixmask", 0, tmp_path, tmp_path,
                                    tmp_path, [])
    assert reproduce.stopped_segment(cfg) == (0.0, None)
    run = tmp_path / "runs" / "mixmask_mocov2plus" / "abc123"
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps(
        OmegaConf.to_container(parse_pretrain_cfg(cfg.copy()), resolve=True)))
    for epoch, t in ((3, 1000.0), (4, 1250.0)):
        ckpt = run / f"{cfg.name}-abc123-ep={epoch}.ckpt"
        ckpt.write_bytes(b"")
        os.utime(ckpt, (t, t))
    os.utime(run / "args.json", (400.0, 400.0))
    assert reproduce.stopped_segment(cfg) == (850.0, f"{cfg.name}-abc123-ep=4.ckpt")
    other = reproduce.pretrain_config(PAPER, "mocov2plus", "mixmask", 1, tmp_path, tmp_path,
                                      tmp_path, [])
    assert reproduce.stopped_segment(other) == (0.0, None)
    assert reproduce.parse_args(["--resume", "--seed", "1"]).resume
