"""The reproduction plan (benchmarks/reproduce.yaml): every method x variant builds a valid
pretraining config of that variant, and variants differ only in their method_kwargs."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import REPO, data_file
from solo_mixmask.data.datasets import scan_image_folder
from solo_mixmask.engine.pretrain import parse_pretrain_cfg
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
    (["--seed", "-1"], "seed=-1: must be at least 0"),  # numpy's seeding would raise mid-run
    (["--seed", "0", "-2"], "seed=-2: must be at least 0"),  # every seed, not the first only
    (["--label", "a/b"], "--label 'a/b': use letters"),
    (["--label", "../up"], "--label '../up': use letters"),
])
def test_bad_input_is_refused_before_anything_is_unpacked(argv, message, tmp_path):
    work = tmp_path / "work"
    with pytest.raises(reproduce.BadInput, match=message):
        reproduce.main([*argv, "--work", str(work)])
    assert not work.exists()


@pytest.mark.parametrize("option", ["--results", "--work"])
def test_a_results_or_work_path_below_a_file_is_refused_first(option, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    work = tmp_path / "work"
    argv = ["--work", str(work), "--results", str(tmp_path / "results")]
    argv[argv.index(option) + 1] = str(afile / "below")
    with pytest.raises(reproduce.BadInput, match=f"{afile} is a file, not a folder"):
        reproduce.main(argv)
    assert not work.exists() and not (tmp_path / "results").exists()


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


@pytest.mark.parametrize("method", ["byol", "simclr", "simsiam"])
def test_the_paper_plan_runs_each_protocol_with_its_schedule_scaled_by_fraction(method, tmp_path):
    """BYOL/SimCLR (W-MSE) and SimSiam in reproduce_paper.yaml are scripts/pretrain/paper/cifar100's
    recipes; the schedule's landmarks keep their fraction of the run (decays, warm-up), the rest
    is the recipe's, except the data statistics (CIFAR-10 here, the recipe's own code base's).
    The paper's SimCLR branch configs detach the clean targets; the plan's variants are shared by
    every method, so its runs take that key on the command line (docs/results.md)."""
    from solo_mixmask.config import load_config
    from solo_mixmask.utils.schedulers import build_schedule

    for variant in PAPER.variants:
        detach = ["method_kwargs.mix_stop_gradient=true"] if (
            method == "simclr" and variant != "vanilla") else []
        small = build(method, variant, tmp_path, detach, plan=PAPER)
        name = method if variant == "vanilla" else f"{method}_{variant}"
        full = OmegaConf.to_container(parse_pretrain_cfg(load_config(
            str(REPO / "scripts/pretrain/paper/cifar100"), name,
            [f"data.train_path={tmp_path}", "data.val_path=null", "knn_eval.enabled=false"])))
        assert small["method_kwargs"] == full["method_kwargs"], variant
        assert small["augmentations"] == full["augmentations"]
        assert small["momentum"] == full["momentum"]
        for key in ("name", "weight_decay", "kwargs", "scale_lr"):
            assert small["optimizer"][key] == full["optimizer"][key], key
        assert small["optimizer"]["lr"] / small["optimizer"]["lr_scale"] == pytest.approx(
            full["optimizer"]["lr"] / full["optimizer"]["lr_scale"])
        assert small["knn_eval"]["feature"] == "backbone"
    steps, full_steps = 50 * 5000 // 128, 1000 * 50000 / 512
    f_small = build_schedule(OmegaConf.create(small["scheduler"]), 1.0, steps, 50)
    f_full = build_schedule(OmegaConf.create(full["scheduler"]), 1.0, int(full_steps), 1000)
    for fraction in (0.002, 0.004, 0.3, 0.949, 0.951, 0.974, 0.976, 0.999):
        # the same factor at the same fraction of the run, to the resolution of a step here (a
        # step is a twentieth of SimSiam's scaled warm-up, a tenth of W-MSE's)
        assert f_small(int(fraction * steps)) == pytest.approx(
            f_full(int(fraction * full_steps)), abs=0.11), fraction


def test_a_bad_protocol_block_is_refused_before_anything_is_written(tmp_path):
    plan = OmegaConf.load(REPO / "benchmarks" / "reproduce_paper.yaml")
    cases = [({"knn": ["--kk", "5"]}, "protocol.knn: --kk 5"),
             ({"knn": ["--distance", "manhattan"]}, "invalid choice: 'manhattan'"),
             ({"linear": "scripts/linear/paper/cifar100/nope.yaml"}, "config file not found"),
             ({"linear": "scripts/linear/paper/cifar100/byol.yaml", "knnn": []},
              "unknown key 'knnn'")]
    for block, message in cases:
        plan.methods.byol.protocol = block
        with pytest.raises(reproduce.BadInput, match=message):
            reproduce.check_protocol(plan, "byol", tmp_path / "w")
    assert not (tmp_path / "w").exists()


@pytest.mark.data
def test_a_run_records_the_common_and_the_protocol_evaluations(tmp_path):
    """A BYOL run of the paper plan, shrunk: the common KNN and linear records, then W-MSE's own
    KNN (k 5, Euclidean, majority, backbone) and linear probe, each labelled with the run."""
    import json

    plan = OmegaConf.load(REPO / "benchmarks" / "reproduce_paper.yaml")
    plan.data.train_per_class, plan.data.test_per_class, plan.data.num_workers = 8, 4, 0
    plan.budget.update(max_epochs=1, batch_size=32)
    plan.linear.max_epochs = 1
    plan.knn.frequency = 1
    path = tmp_path / "plan.yaml"
    OmegaConf.save(plan, path)
    results, work = tmp_path / "results", tmp_path / "work"
    reproduce.main(["--config", str(path), "--method", "byol", "--variant", "mixmask",
                    "--results", str(results), "--work", str(work), "--threads", "1"])
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    knn = sorted((r for r in records if r["eval"] == "knn"), key=lambda r: r["settings"]["k"])
    linear = [r for r in records if r["eval"] == "linear"]
    assert [(r["settings"]["k"], r["settings"]["distance"], r["settings"]["vote"],
             r["settings"]["feature"]) for r in knn] == [
        (5, "euclidean", "majority", "backbone"), (200, "cosine", "weighted", "backbone")]
    assert sorted((r["settings"]["protocol"], r["settings"]["optimizer"]) for r in linear) == [
        ("precomputed-features", "sgd"), ("wmse-probe", "adam")]
    for r in records:
        assert r["variant"] == "mixmask" and r["settings"]["seed"] == 0
        assert r["run_dir"] == "runs/byol-mixmask-1ep-s0"
    assert sum("the protocol's own" in r["command"] for r in records) == 2

    # --resume of the finished run redoes only the evaluation whose record is missing
    files = sorted(results.glob("*.json"))
    (probe,) = [p for p in files if "the protocol's own linear" in p.read_text()]
    kept = {p: p.read_text() for p in files if p != probe}
    probe.unlink()
    argv = ["--config", str(path), "--method", "byol", "--variant", "mixmask", "--results",
            str(results), "--threads", "1", "--resume"]
    reproduce.main([*argv, "--work", str(work)])
    after = sorted(results.glob("*.json"))
    assert len(after) == 4 and all(kept[p] == p.read_text() for p in kept)
    (new,) = set(after) - set(kept)
    assert json.loads(new.read_text())["settings"]["protocol"] == "wmse-probe"
    # records without the run's checkpoint to evaluate again: refused, nothing added
    with pytest.raises(reproduce.BadInput, match="has no checkpoint of that run"):
        reproduce.main([*argv, "--work", str(tmp_path / "elsewhere")])
    assert sorted(results.glob("*.json")) == after


def test_the_dataset_option_runs_the_same_plan_on_the_tiny_imagenet_archive(tmp_path):
    """--dataset tiny-imagenet: the plan's budget and recipe, Tiny-ImageNet's archive and class
    count; an entry the plan does not name is one error before anything is unpacked."""
    args = reproduce.parse_args(["--config", str(REPO / "benchmarks/reproduce_paper.yaml"),
                                 "--dataset", "tiny-imagenet", "--work", str(tmp_path / "w")])
    plan = reproduce.check_plan(args)
    assert (plan.data.train_npz, plan.data.train_per_class) == (
        "tiny-imagenet-200-32px/train.npz", 25)
    cfg = build("mocov2plus", "mixmask", tmp_path, plan=plan)
    assert (cfg["data"]["dataset"], cfg["data"]["num_classes"]) == ("tiny-imagenet", 200)
    assert cfg["max_epochs"] == PAPER.budget.max_epochs
    assert cfg["augmentations"] == build("mocov2plus", "mixmask", tmp_path,
                                         plan=PAPER)["augmentations"]
    with pytest.raises(reproduce.BadInput, match=r"unknown --dataset 'tiny': the plan's datasets "
                       r"section names \['tiny-imagenet'\]"):
        reproduce.main(["--config", str(REPO / "benchmarks/reproduce_paper.yaml"), "--dataset",
                        "tiny", "--work", str(tmp_path / "w2")])
    assert not (tmp_path / "w").exists() and not (tmp_path / "w2").exists()
    plan = OmegaConf.load(REPO / "benchmarks/reproduce_paper.yaml")
    del plan.data.dataset  # a plan written before the key existed
    OmegaConf.save(plan, tmp_path / "old.yaml")
    with pytest.raises(reproduce.BadInput, match="the plan's data section names no 'dataset'"):
        reproduce.main(["--config", str(tmp_path / "old.yaml"), "--work", str(tmp_path / "w3")])
    assert not (tmp_path / "w3").exists()


@pytest.mark.long  # unpacks the whole 100,000-image archive's selection (about 40 s)
def test_the_tiny_imagenet_subset_holds_25_images_of_each_class(tmp_path):
    plan = OmegaConf.merge(PAPER.data, PAPER.datasets["tiny-imagenet"])
    data_file(plan.train_npz)  # skips (fails in CI) without the archive
    train, _ = reproduce.prepare_data(plan, tmp_path)
    images = scan_image_folder(train)  # what a run and its record count
    counts = np.bincount(images.targets)
    assert len(images.classes) == len(counts) == 200 and set(counts) == {25}
