"""Bad input: one clear line, exit code 2, nothing already written touched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import tiny_cfg
from solo_mixmask.cli import main
from solo_mixmask.engine.pretrain import pretrain
from solo_mixmask.errors import ConfigError, DataError, one_line


def run_cli(cfg, tmp_path: Path, capsys, *overrides: str) -> tuple[int, str]:
    path = tmp_path / "cfg.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    code = main(["pretrain", "--config-path", str(tmp_path), "--config-name", "cfg.yaml",
                 *overrides])
    return code, capsys.readouterr().err


def copy_tree(src: Path, dst: Path, per_class: int = 8) -> Path:
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy(f, dst / cls.name / f.name)
    return dst


@pytest.mark.parametrize("override,message", [
    ("method=mocov4", "unknown method 'mocov4'"),
    ("backbone.name=resnet1000", "unknown backbone 'resnet1000'"),
    ("data.dataset=mnist", "unknown dataset 'mnist'"),
    ("optimizer.name=sgdw", "unknown optimizer 'sgdw'"),
    ("method_kwargs.queue_size=1000", "queue_size=1000 must be a positive multiple"),
    ("augmentations.0.crop_size=4096", "crop_size=4096 is outside the supported range"),
    ("~method_kwargs.temperature", "missing required key 'method_kwargs.temperature'"),
    ("data.train_path=/nonexistent/images", "data path does not exist: /nonexistent/images"),
])
def test_bad_config_gives_one_line_error(override, message, cifar_train, tmp_path, capsys):
    cfg = tiny_cfg("mocov2plus", cifar_train, tmp_path)
    code, err = run_cli(cfg, tmp_path, capsys, override)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not (tmp_path / "trained_models").exists()  # nothing written by a failed start


@pytest.mark.parametrize("package,override", [("tensorboard", "+tensorboard.enabled=true"),
                                              ("wandb", "wandb.enabled=true")])
def test_optional_logger_without_its_package(package, override, cifar_train, tmp_path, capsys):
    from importlib.util import find_spec

    if find_spec(package):
        pytest.skip(f"{package} is installed here")
    cfg = tiny_cfg("byol", cifar_train, tmp_path, wandb__enabled=False)
    code, err = run_cli(cfg, tmp_path, capsys, override)
    assert code == 2 and f"needs the {package} package" in err
    assert not (tmp_path / "trained_models").exists()


def test_empty_data_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cfg = tiny_cfg("byol", tmp_path / "empty", tmp_path)
    code, err = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and "data path is empty" in err


def test_class_folder_without_images(cifar_train, tmp_path, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    (data / "zebra").mkdir()
    (data / "zebra" / "notes.txt").write_text("no images here")
    cfg = tiny_cfg("byol", data, tmp_path)
    code, err = run_cli(cfg, tmp_path, capsys)
    assert code == 2 and f"class folder has no images: {data / 'zebra'}" in err


def corrupt_one(data: Path) -> Path:
    victim = sorted((data / "cat").iterdir())[3]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not a complete jpeg")
    return victim


def test_corrupt_image_is_named_before_training_with_verify(cifar_train, tmp_path, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = corrupt_one(data)
    cfg = tiny_cfg("simsiam", data, tmp_path)
    code, err = run_cli(cfg, tmp_path, capsys, "+data.verify=true")
    assert code == 2 and f"cannot read image {victim}" in err
    assert not (tmp_path / "trained_models").exists()


def test_corrupt_image_is_named_when_met_in_a_worker(cifar_train, tmp_path, capsys):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = corrupt_one(data)
    cfg = tiny_cfg("simsiam", data, tmp_path, data__num_workers=1, optimizer__batch_size=16)
    code, err = run_cli(cfg, tmp_path, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"cannot read image {victim}" in lines[0]


def test_corrupt_image_is_skipped_with_a_count_when_allowed(cifar_train, tmp_path):
    data = copy_tree(cifar_train, tmp_path / "data")
    victim = corrupt_one(data)
    cfg = tiny_cfg("simsiam", data, tmp_path, data__skip_corrupt=True,
                   optimizer__batch_size=16, checkpoint__enabled=False)
    with pytest.warns(UserWarning, match=f"skipping unreadable image {victim} \\(1 skipped"):
        result = pretrain(cfg, trainer_kwargs={"logger": False})
    assert result.metrics["train_loss"] == result.metrics["train_loss"]  # finite, not NaN


def test_failed_start_leaves_existing_runs_untouched(cifar_train, tmp_path, capsys):
    cfg = tiny_cfg("mocov2plus", cifar_train, tmp_path, limit_train_batches=2,
                   auto_resume__enabled=True)
    result = pretrain(cfg.copy(), trainer_kwargs={"logger": False})
    root = tmp_path / "trained_models"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert result.checkpoint in before and (result.run_dir / "args.json") in before
    code, err = run_cli(cfg, tmp_path, capsys, "method_kwargs.queue_size=100")
    assert code == 2
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert after == before


def test_resume_from_a_truncated_checkpoint(cifar_train, tmp_path, capsys):
    cfg = tiny_cfg("byol", cifar_train, tmp_path, limit_train_batches=1)
    result = pretrain(cfg, trainer_kwargs={"logger": False})
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(result.checkpoint.read_bytes()[:5000])
    code, err = run_cli(cfg, tmp_path, capsys, f"+resume_from_checkpoint={torn}")
    assert code == 2 and f"{torn} is not a complete checkpoint" in err
    code, err = run_cli(cfg, tmp_path, capsys, "+resume_from_checkpoint=/nope.ckpt")
    assert code == 2 and "no such file: /nope.ckpt" in err


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
    assert os.path.basename(result.checkpoint).startswith("test-mixmask_byol-")
