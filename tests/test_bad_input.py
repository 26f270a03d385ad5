"""Bad input: one clear line, exit code 2, no traceback, and no file written or changed.

Each case is what a new user meets: misspelt keys, values of the wrong type, the wrong data or
checkpoint, a GPU config on a CPU machine. The command runs through ``solo_mixmask.cli.main`` in a
working folder of its own, and the whole temporary tree is compared before and after.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.cli import main
from solo_mixmask.engine.pretrain import pretrain
from solo_mixmask.errors import ConfigError, DataError, one_line


def snapshot(root: Path) -> dict[Path, tuple[int, int] | None]:
    """Every file (size, mtime) and every folder (None) under ``root``."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The command's current folder (inside tmp_path, so the snapshot covers it)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def expect_error(argv: list[str], root: Path, capsys, message: str) -> str:
    """Runs the CLI; asserts exit 2, one ``error:`` line containing ``message``, no traceback and
    nothing written or changed under ``root``."""
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("notice:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert message in lines[0], lines[0]
    assert snapshot(root) == before, "a failed start wrote or changed files"
    return lines[0]


def write_cfg(cfg, tmp_path: Path, name: str = "cfg.yaml") -> list[str]:
    (tmp_path / name).write_text(OmegaConf.to_yaml(cfg))
    return ["pretrain", "--config-path", str(tmp_path), "--config-name", name]


def copy_tree(src: Path, dst: Path, per_class: int = 8) -> Path:
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy(f, dst / cls.name / f.name)
    return dst


# ------------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override,message", [
    ("method=mocov4", "unknown method 'mocov4'"),
    ("method=mocov2plsu", "(did you mean 'mocov2plus'?)"),
    ("backbone.name=resnet1000", "unknown backbone 'resnet1000'"),
    ("data.dataset=mnist", "unknown dataset 'mnist'"),
    ("optimizer.name=sgdw", "unknown optimizer 'sgdw'"),
    ("method_kwargs.queue_size=1000", "queue_size=1000 must be a positive multiple"),
    ("augmentations.0.crop_size=4096", "augmentations[0].crop_size=4096: must be at most 1024"),
    ("~method_kwargs.temperature", "missing required key 'method_kwargs.temperature'"),
    ("data.train_path=/nonexistent/images", "data path does not exist: /nonexistent/images"),
    ("seed=-1", "seed=-1: must be at least 0"),
    ("seed=4294967296", "seed=4294967296: must be at most 4294967295"),
    # typos: plain and Hydra's +key spelling
    ("+optimizer.lrr=0.1", "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("optimizer.lrr=0.1", "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("+optimiser.lr=0.1", "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    ("knn_eval.distance=cosine",
     "unknown key 'knn_eval.distance' (did you mean 'knn_eval.distance_func'?)"),
    # values of the wrong type
    ("optimizer.lr=abc", "optimizer.lr='abc': expected a number"),
    ("optimizer.batch_size=3x", "optimizer.batch_size='3x': expected an integer"),
    ("max_epochs=one", "max_epochs='one': expected an integer"),
    ("max_epochs=0", "max_epochs=0: must be at least 1"),
    ("performance.augment_ahead=maybe", "performance.augment_ahead='maybe': expected true or false"),
    ("performance.augment_ahed=true",
     "unknown key 'performance.augment_ahed' (did you mean 'performance.augment_ahead'?)"),
    ("augmentations=[1,2]", "augmentations[0] must be a mapping of keys"),
    ("augmentations.0.rrc=[0.2,1.0]",
     "augmentations[0].rrc: cannot apply the override (Cannot merge DictConfig with ListConfig)"),
    ("augmentations.0.color_jitter.prob=1.5",
     "augmentations[0].color_jitter.prob=1.5: must be at most 1"),
    ("optimizer.lr=-1", "optimizer.lr=-1: must be at least 0"),
    ("data.num_workers=-2", "data.num_workers=-2: must be at least 0"),
    ("devices=zero", "devices='zero': use auto, a count"),
    ("precision=15", "precision=15: choose one of"),
    ("scheduler.name=cosin", "scheduler.name='cosin': choose one of"),
    # keys passed on to constructors
    ("backbone.kwargs.widht=0.5", "widht"),
    ("+optimizer.kwargs.momentm=0.9",
     "unknown key 'optimizer.kwargs.momentm' (did you mean 'optimizer.kwargs.momentum'?); "
     "optimizer sgd takes momentum, dampening, nesterov"),
    ("+optimizer.kwargs.betas=[0.9,0.99]", "unknown key 'optimizer.kwargs.betas'; optimizer sgd "
     "takes momentum"),
    # the machine
    ("precision=16-mixed", "precision=16-mixed needs a GPU"),
])
def test_bad_config_gives_one_line_error(override, message, cifar_train, tmp_path, workdir,
                                         capsys):
    if "GPU" in message and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = tiny_cfg("mocov2plus", cifar_train, tmp_path)
    expect_error(write_cfg(cfg, tmp_path) + [override], tmp_path, capsys, message)


def test_gpu_config_on_a_cpu_machine_says_what_to_pass(cifar_train, tmp_path, workdir, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = tiny_cfg("byol", cifar_train, tmp_path, accelerator="gpu")
    line = expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                        "accelerator=gpu but no CUDA GPU is visible")
    assert "accelerator=auto" in line


@pytest.mark.parametrize("yaml_edit,message", [
    (lambda c: c.update(optimiser=c.pop("optimizer")),
     "unknown key 'optimiser' (did you mean 'optimizer'?)"),
    (lambda c: c["method_kwargs"]["mixmask"].update(patern="discrete"),
     "unknown key 'method_kwargs.mixmask.patern' (did you mean 'method_kwargs.mixmask.pattern'?)"),
    (lambda c: c["method_kwargs"]["mixmask"].update(ratoi=0.3),
     "unknown key 'method_kwargs.mixmask.ratoi' (did you mean 'method_kwargs.mixmask.ratio'?)"),
    (lambda c: c["method_kwargs"].update(unmix={"enabled": True, "probability": 0.5}),
     "unknown key 'method_kwargs.unmix.probability' (did you mean 'method_kwargs.unmix.prob'?)"),
    (lambda c: c["method_kwargs"]["mixmask"].update(ratio=1.5),
     "method_kwargs.mixmask.ratio=1.5 must lie inside (0, 1)"),
    (lambda c: c["method_kwargs"]["mixmask"].update(pattern="blockd"),
     "method_kwargs.mixmask.pattern='blockd': choose one of"),
    (lambda c: c["augmentations"][0]["rrc"].update(crop_min_scale=0.9, crop_max_scale=0.5),
     "crop_min_scale=0.9 is above crop_max_scale=0.5"),
])
def test_yaml_typos_and_values(yaml_edit, message, cifar_train, tmp_path, workdir, capsys):
    cfg = OmegaConf.to_container(tiny_cfg("mixmask_simclr", cifar_train, tmp_path))
    cfg["method_kwargs"]["mixmask"] = {"pattern": "blocked"}
    yaml_edit(cfg)
    expect_error(write_cfg(OmegaConf.create(cfg), tmp_path), tmp_path, capsys, message)


def test_solo_learn_keys_this_engine_ignores_are_noticed(cifar_train, tmp_path, capsys):
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    cfg = tiny_cfg("byol", cifar_train, tmp_path, auto_umap__enabled=True,
                   debug_augmentations=True)
    parse_pretrain_cfg(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["notice: auto_umap.enabled=True is ignored (UMAP plots are not produced by "
                   "this engine)",
                   "notice: debug_augmentations=True is ignored (augmentation previews are not "
                   "produced by this engine)"]


def test_keys_of_solo_learn_configs_that_no_code_reads_are_noticed(cifar_train, tmp_path, capsys):
    """solo-learn's SimSiam configs carry a temperature, and one carries augmentations_cfg."""
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg

    cfg = tiny_cfg("simsiam", cifar_train, tmp_path, method_kwargs__temperature=0.2,
                   augmentations_cfg="scripts/configs/defaults/augmentations/weak.yaml")
    parsed = parse_pretrain_cfg(cfg)
    err = capsys.readouterr().err
    assert "notice: method_kwargs.temperature=0.2 is ignored (SimSiam has no temperature" in err
    assert "notice: augmentations_cfg=scripts/configs/defaults/augmentations/weak.yaml" in err
    assert parsed.method == "simsiam"


# ------------------------------------------------------------------------------ config files
@pytest.mark.parametrize("text,where,message", [
    ("name: x\noptimizer: {lr: 0.1\nmax_epochs: 1\n", "line 3, column 11",
     "expected ',' or '}', but got ':'"),
    ("name: x\noptimizer:\n\tlr: 0.1\n", "line 3, column 1",
     "found character '\\t' that cannot start any token"),
    ("name: x\n  method: simclr\n", "line 2, column 9", "mapping values are not allowed here"),
])
def test_yaml_syntax_error_names_the_file_and_line(text, where, message, tmp_path, workdir,
                                                   capsys):
    (tmp_path / "bad.yaml").write_text(text)
    line = expect_error(["pretrain", "--config-path", str(tmp_path), "--config-name", "bad"],
                        tmp_path, capsys, f"cannot parse {tmp_path / 'bad.yaml'}: {where}: ")
    assert message in line


def test_yaml_syntax_error_in_a_config_group_names_that_file(tmp_path, workdir, capsys):
    (tmp_path / "augmentations").mkdir()
    (tmp_path / "augmentations" / "weak.yaml").write_text("- crop_size: [32\n")
    (tmp_path / "run.yaml").write_text("defaults:\n  - augmentations: weak\n  - _self_\n"
                                       "name: x\n")
    expect_error(["pretrain", "--config-path", str(tmp_path), "--config-name", "run"], tmp_path,
                 capsys, f"cannot parse {tmp_path / 'augmentations' / 'weak.yaml'}: line 2")


# ------------------------------------------------------------------------------------ data
def test_dataset_with_another_class_count_than_the_folder(cifar_train, tmp_path, workdir,
                                                          capsys):
    cfg = tiny_cfg("simclr", cifar_train, tmp_path, data__dataset="cifar100")
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                 f"label count mismatch: data.dataset=cifar100 has 100 classes but {cifar_train} "
                 "has 10 class folders")


def test_empty_data_path(tmp_path, workdir, capsys):
    (tmp_path / "empty").mkdir()
    cfg = tiny_cfg("byol", tmp_path / "empty", tmp_path)
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys, "data path is empty")


def test_class_folder_without_images(cifar_train, tmp_path, workdir, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    (data / "zebra").mkdir()
    (data / "zebra" / "notes.txt").write_text("no images here")
    cfg = tiny_cfg("byol", data, tmp_path)
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                 f"class folder has no images: {data / 'zebra'}")


def test_folder_of_images_without_class_folders(cifar_train, tmp_path, workdir, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((cifar_train / "cat").iterdir())[:40]:
        shutil.copy(f, flat / f.name)
    cfg = tiny_cfg("byol", flat, tmp_path)
    line = expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                        f"{flat} holds images but no class folders: use data.no_labels=true")
    assert "download" not in line


def test_folder_without_images_or_torchvision_files(tmp_path, workdir, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "readme.txt").write_text("nothing to train on")
    cfg = tiny_cfg("byol", odd, tmp_path)
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                 f"{odd} has no class folders and no torchvision cifar10 files")


def corrupt_one(data: Path) -> Path:
    victim = sorted((data / "cat").iterdir())[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not a complete jpeg")
    return victim


def test_corrupt_image_is_named_before_the_run_starts(cifar_train, tmp_path, workdir, capsys):
    """The quick scan (on by default) reads the first and last bytes of every file."""
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = corrupt_one(data)
    cfg = tiny_cfg("simsiam", data, tmp_path)
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                 f"cannot read image {victim}: truncated JPEG (no end-of-image marker)")


def test_full_verify_decodes_every_image(cifar_train, tmp_path, workdir, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = sorted((data / "dog").iterdir())[2]
    good = victim.read_bytes()
    # a valid start and end marker around garbage: the quick scan cannot tell, decoding can
    victim.write_bytes(good[:20] + b"\x00" * 200 + b"\xff\xd9")
    cfg = tiny_cfg("simsiam", data, tmp_path)
    argv = write_cfg(cfg, tmp_path)
    expect_error(argv + ["data.verify=full"], tmp_path, capsys, f"cannot read image {victim}")


def test_decode_failure_mid_run_names_the_file_and_the_last_checkpoint(cifar_train, tmp_path,
                                                                       workdir, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = sorted((data / "dog").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:20] + b"\x00" * 200 + b"\xff\xd9")
    cfg = tiny_cfg("simsiam", data, tmp_path, optimizer__batch_size=16, data__verify="none",
                   enable_progress_bar=True)
    code = main(write_cfg(cfg, tmp_path))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("error: cannot read image ") and str(victim) in last
    assert "no checkpoint was written yet" in last  # the image is met after a few steps


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(cifar_train, tmp_path, workdir,
                                                                 capsys):
    data = copy_tree(cifar_train, tmp_path / "data", per_class=2)
    for f in data.rglob("*.jpg"):  # every image unreadable, yet with valid markers
        f.write_bytes(f.read_bytes()[:20] + b"\x00" * 200 + b"\xff\xd9")
    cfg = tiny_cfg("simsiam", data, tmp_path, optimizer__batch_size=4, data__verify="none")
    code = main(write_cfg(cfg, tmp_path))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: cannot read image ")
    assert "stopped at epoch 0, step 0; nothing was kept" in last
    assert not list((tmp_path / "trained_models").rglob("*"))


def test_corrupt_image_is_skipped_with_a_count_when_allowed(cifar_train, tmp_path):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = corrupt_one(data)
    cfg = tiny_cfg("simsiam", data, tmp_path, data__skip_corrupt=True,
                   optimizer__batch_size=16, checkpoint__enabled=False)
    with pytest.warns(UserWarning, match="skipping 1 unreadable images"):
        result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert result.metrics["train_loss"] == result.metrics["train_loss"]  # finite, not NaN
    assert victim.exists()


# --------------------------------------------------------------------- folders and checkpoints
def test_checkpoint_dir_that_is_a_file(cifar_train, tmp_path, workdir, capsys):
    (tmp_path / "models").write_text("a file, not a folder")
    cfg = tiny_cfg("byol", cifar_train, tmp_path, checkpoint__dir=str(tmp_path / "models"))
    expect_error(write_cfg(cfg, tmp_path), tmp_path, capsys,
                 f"checkpoint.dir={tmp_path / 'models'}: this is a file, not a folder")


def test_failed_start_leaves_existing_runs_untouched(cifar_train, tmp_path, workdir, capsys):
    cfg = tiny_cfg("mocov2plus", cifar_train, tmp_path, limit_train_batches=2,
                   auto_resume__enabled=True)
    result = pretrain(cfg.copy(), trainer_kwargs={"logger": False})
    assert result.checkpoint.is_file() and (result.run_dir / "args.json").is_file()
    expect_error(write_cfg(cfg, tmp_path) + ["method_kwargs.queue_size=100"], tmp_path, capsys,
                 "queue_size=100")


@pytest.fixture
def small_run(cifar_train, tmp_path):
    cfg = tiny_cfg("byol", cifar_train, tmp_path, limit_train_batches=1)
    return pretrain(cfg, trainer_kwargs={"logger": False})


def test_resume_from_a_truncated_checkpoint(small_run, cifar_train, tmp_path, workdir, capsys):
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(small_run.checkpoint.read_bytes()[:5000])
    argv = write_cfg(tiny_cfg("byol", cifar_train, tmp_path), tmp_path)
    expect_error(argv + [f"resume_from_checkpoint={torn}"], tmp_path, capsys,
                 f"{torn} is not a complete checkpoint")
    expect_error(argv + ["resume_from_checkpoint=/nope.ckpt"], tmp_path, capsys,
                 "no such file: /nope.ckpt")


def test_resume_from_a_checkpoint_of_another_width(small_run, cifar_train, tmp_path, workdir,
                                                   capsys):
    cfg = tiny_cfg("byol", cifar_train, tmp_path, backbone__kwargs__width=0.25)
    line = expect_error(write_cfg(cfg, tmp_path) + [f"resume_from_checkpoint={small_run.checkpoint}"],
                        tmp_path, capsys, "does not match this model")
    assert "another backbone, width or head size" in line


def test_resume_from_a_checkpoint_of_another_method(small_run, cifar_train, tmp_path, workdir,
                                                    capsys):
    cfg = tiny_cfg("simsiam", cifar_train, tmp_path)
    expect_error(write_cfg(cfg, tmp_path) + [f"resume_from_checkpoint={small_run.checkpoint}"],
                 tmp_path, capsys, "is a byol run; this config trains simsiam")


def test_resume_path_with_the_packages_own_file_name_needs_no_quotes(small_run, cifar_train,
                                                                     tmp_path, capsys):
    """``...-ep=0.ckpt`` contains '=', which Hydra's grammar rejects unquoted."""
    assert "-ep=0.ckpt" in small_run.checkpoint.name
    cfg = tiny_cfg("byol", cifar_train, tmp_path, limit_train_batches=1, max_epochs=2)
    code = main(write_cfg(cfg, tmp_path) + [f"resume_from_checkpoint={small_run.checkpoint}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"Resuming from {small_run.checkpoint}" in out.out


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"this is not a checkpoint at all\n" * 20, "not a complete PyTorch checkpoint"),
    (b"PK\x03\x04 truncated zip", "not a complete PyTorch checkpoint"),
])
def test_knn_with_an_unreadable_checkpoint(content, message, cifar_train, cifar_test, tmp_path,
                                           workdir, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    line = expect_error(["knn", str(bad), "--train-path", str(cifar_train), "--val-path",
                         str(cifar_test)], tmp_path, capsys, message)
    assert len(line) < 300


def test_knn_with_a_checkpoint_without_backbone_weights(cifar_train, cifar_test, tmp_path,
                                                        workdir, capsys):
    path = tmp_path / "head.pth"
    torch.save({"state_dict": {"classifier.weight": torch.zeros(10, 4)}}, path)
    expect_error(["knn", str(path), "--train-path", str(cifar_train), "--val-path",
                  str(cifar_test)], tmp_path, capsys, "checkpoint has no backbone weights")


def knn_argv(checkpoint: Path, train: Path, val: Path, *extra: str) -> list[str]:
    return ["knn", str(checkpoint), "--train-path", str(train), "--val-path", str(val),
            "--num-workers", "0", *extra]


@pytest.mark.parametrize("extra", [[], ["--backbone", "resnet18"]])
def test_knn_with_backbone_kwargs_of_another_width(extra, small_run, cifar_train, cifar_test,
                                                   tmp_path, workdir, capsys):
    """The run trained at width 0.125: asking for 0.5 is refused before a record is written."""
    line = expect_error(knn_argv(small_run.checkpoint, cifar_train, cifar_test,
                                 "--backbone-kwargs", '{"width": 0.5}', *extra),
                        tmp_path, capsys, "backbone width=0.5 does not match the checkpoint")
    assert "trained with width=0.125" in line
    assert not (workdir / "results").exists()


def test_knn_with_backbone_kwargs_that_do_not_fit_bare_weights(cifar_train, cifar_test,
                                                               tmp_path, workdir, capsys):
    """Weights without a config: the width is read from them."""
    from solo_mixmask.backbones import create_backbone

    path = tmp_path / "r18.pth"
    torch.save(create_backbone("resnet18", width=0.125, cifar_stem=True).state_dict(), path)
    line = expect_error(knn_argv(path, cifar_train, cifar_test, "--backbone-kwargs",
                                 '{"width": 0.5}'),
                        tmp_path, capsys, "backbone width=0.5 does not match the checkpoint")
    assert "have width=0.125" in line and "conv1.weight" in line
    line = expect_error(knn_argv(path, cifar_train, cifar_test, "--backbone-kwargs",
                                 '{"cifar_stem": false}'),
                        tmp_path, capsys, "backbone cifar_stem=false does not match the checkpoint")
    assert "have cifar_stem=true" in line


def test_linear_with_a_backbone_width_the_checkpoint_was_not_trained_with(
        small_run, cifar_train, cifar_test, tmp_path, workdir, capsys):
    argv = ["linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
            "byol.yaml", f"pretrained_feature_extractor={small_run.checkpoint}",
            "data.dataset=cifar10", f"data.train_path={cifar_train}",
            f"data.val_path={cifar_test}", "data.num_workers=0", "accelerator=cpu", "devices=1",
            "precision=32", "max_epochs=1", "backbone.kwargs.width=0.5"]
    line = expect_error(argv, tmp_path, capsys, "backbone width=0.5 does not match the checkpoint")
    assert "trained with width=0.125" in line


def test_linear_on_a_data_format_evaluation_does_not_read(small_run, cifar_train, cifar_test,
                                                          tmp_path, workdir, capsys):
    """The evaluation schema allows only what evaluation reads (it used to allow ``dali``, which
    the probe then refused with its own message)."""
    argv = ["linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
            "byol.yaml", f"pretrained_feature_extractor={small_run.checkpoint}",
            "data.dataset=cifar10", f"data.train_path={cifar_train}",
            f"data.val_path={cifar_test}", "data.num_workers=0", "accelerator=cpu", "devices=1",
            "precision=32", "max_epochs=1", "data.format=dali"]
    expect_error(argv, tmp_path, capsys, "data.format='dali': choose one of ['image_folder']")


def test_a_linear_probe_that_fails_before_its_first_step_leaves_no_folder(
        small_run, cifar_train, cifar_test, tmp_path, workdir, capsys):
    """The run-folder policy of pretraining holds for the probe: its folder (with args.json) is
    made when the probe starts and removed when it fails before a step (here: every validation
    image unreadable, met while the features are extracted)."""
    val = copy_tree(cifar_test, tmp_path / "val", per_class=2)
    for f in val.rglob("*.jpg"):  # valid markers around garbage: only decoding can tell
        f.write_bytes(f.read_bytes()[:20] + b"\x00" * 200 + b"\xff\xd9")
    out = tmp_path / "out"
    out.mkdir()
    argv = ["linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
            "byol.yaml", f"pretrained_feature_extractor={small_run.checkpoint}",
            "data.dataset=cifar10", f"data.train_path={cifar_train}", f"data.val_path={val}",
            "data.num_workers=0", "accelerator=cpu", "devices=1", "precision=32", "max_epochs=1",
            "features.precompute=true", f"checkpoint.dir={out / 'runs'}",
            f"results_dir={out / 'results'}"]
    expect_error(argv, out, capsys, "cannot read image")
    assert not (out / "runs").exists()


# ----------------------------------------------------------------------------- other commands
@pytest.mark.parametrize("argv,message", [
    (["show-masks", "--grids", "0"], "--grids 0: a grid is 2 to --size"),
    (["show-masks", "--ratio", "1.5"], "--ratio 1.5: the kept fraction lies inside (0, 1)"),
    (["show-masks", "--out", "masks.jpg"], "give a .png file name"),
    (["quickstart", "--epochs", "0"], "--epochs 0: train for at least 1 epoch"),
])
def test_other_commands(argv, message, tmp_path, workdir, capsys):
    expect_error(argv, tmp_path, capsys, message)


@pytest.mark.parametrize("override,message", [
    ("optimizer.lrr=0.1", "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("backbone.kwargs.widht=0.5", "widht"),
    ("augmentations.0.crop_size=abc", "augmentations[0].crop_size='abc': expected an integer"),
])
def test_quickstart_checks_its_config_before_writing_the_digits(override, message, tmp_path,
                                                                workdir, capsys):
    out = tmp_path / "quickstart"
    expect_error(["quickstart", "--out", str(out), override], tmp_path, capsys, message)
    assert not out.exists()


def test_quickstart_out_that_cannot_be_created(tmp_path, workdir, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "quickstart"
    expect_error(["quickstart", "--out", str(out)], tmp_path, capsys,
                 f"--out {out}: cannot create this folder")
    if Path("/proc/self").is_dir():  # a virtual file system: nothing can be created at its top
        before = snapshot(tmp_path)
        assert main(["quickstart", "--out", "/proc/nope"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --out /proc/nope: cannot create"), err
        assert snapshot(tmp_path) == before and not Path("/proc/nope").exists()


def test_report_without_out_writes_nothing(tmp_path, workdir, capsys):
    records = tmp_path / "records"
    records.mkdir()
    record = {"schema": "solo-mixmask/result/1", "eval": "knn", "method": "mocov2plus",
              "variant": "vanilla", "dataset": "cifar10", "epochs": 10,
              "metrics": {"acc1": 50.0, "acc5": 90.0}, "settings": {}}
    (records / "r.json").write_text(json.dumps(record))
    before = snapshot(tmp_path)
    assert main(["report", str(records)]) == 0
    assert "| Vanilla" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------ the top-level handler
def test_an_internal_error_is_one_line_with_exit_code_1(monkeypatch, capsys):
    from solo_mixmask.cli import masks

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(masks, "run", broken)
    assert main(["show-masks"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: ZeroDivisionError: division by zero (rerun with --debug or "
                   "SOLO_MIXMASK_DEBUG=1 for the traceback)"]
    assert main(["show-masks", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("SOLO_MIXMASK_DEBUG", "1")
    assert main(["show-masks"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_one_line_unwraps_worker_errors():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback "
                        "(most recent call last):\n  File \"x.py\", line 1\n"
                        "solo_mixmask.errors.DataError: cannot read image /a/b.jpg: bad")
    assert one_line(wrapped) == "cannot read image /a/b.jpg: bad"
    assert one_line(ConfigError("plain")) == "plain"


def test_args_json_holds_the_resolved_config(cifar_train, tmp_path):
    cfg = tiny_cfg("mixmask_byol", cifar_train, tmp_path, limit_train_batches=1)
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    args = json.loads((result.run_dir / "args.json").read_text())
    assert args["method"] == "mixmask_byol"
    assert args["method_kwargs"]["mixmask"]["grid"] == 2  # resolved default for 32 px crops
    assert args["optimizer"]["lr"] == pytest.approx(0.3 * 32 / 256)  # scaled by batch / 256
    assert args["accelerator"] in ("cpu", "gpu") and args["precision"] != "auto"
    assert os.path.basename(result.checkpoint).startswith("test-mixmask_byol-")
