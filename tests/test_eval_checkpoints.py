"""Checkpoint layouts the evaluations accept (official MoCo/MixMask, solo-learn, bare ResNet), checked
key by key, and the one-line errors of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO
from solo_mixmask.backbones import create_backbone
from solo_mixmask.cli import main
from solo_mixmask.errors import DataError
from solo_mixmask.eval.checkpoints import load_backbone, load_checkpoint_file, split_backbone
from solo_mixmask.eval.knn import knn_accuracy
from solo_mixmask.eval.records import provenance

SPEC = {"width": 0.125, "cifar_stem": True}


def resnet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-18 (1/8 width, CIFAR stem) state dict whose every tensor has distinct values,
    BatchNorm statistics included, so a swapped or skipped key cannot go unnoticed."""
    torch.manual_seed(seed)
    state = create_backbone("resnet18", **SPEC).state_dict()
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            value = torch.rand_like(value) + (0.5 if key.endswith("running_var") else -0.5)
        else:
            value = torch.full_like(value, 7)
        out[key] = value
    return out


def assert_same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert sorted(loaded) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def official_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The layout of MoCo's and MixMask's ``main_moco*.py`` saves: DataParallel prefixes, both
    encoders with their projection MLPs, the queue, the optimizer and the next epoch."""
    weights = {f"module.encoder_q.{k}": v for k, v in state.items()}
    weights |= {f"module.encoder_k.{k}": v + 1 if v.is_floating_point() else v
                for k, v in state.items()}
    for enc in ("encoder_q", "encoder_k"):
        weights |= {f"module.{enc}.fc.0.weight": torch.randn(64, 64),
                    f"module.{enc}.fc.0.bias": torch.randn(64),
                    f"module.{enc}.fc.2.weight": torch.randn(128, 64),
                    f"module.{enc}.fc.2.bias": torch.randn(128)}
    weights |= {"module.queue": torch.randn(128, 4096), "module.queue_ptr": torch.zeros(1).long()}
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": weights,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0, 1]}]}},
               path)
    return path


def solo_learn_checkpoint(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """A solo-learn Lightning checkpoint with its run's args.json beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {f"backbone.{k}": v for k, v in state.items()}
    weights |= {f"momentum_backbone.{k}": v * 2 for k, v in state.items()}
    weights |= {"projector.0.weight": torch.randn(64, 64), "classifier.weight": torch.randn(10, 64),
                "classifier.bias": torch.randn(10)}
    path = folder / "mocov2plus-cifar100-abc123-ep=399.ckpt"
    torch.save({"epoch": 399, "global_step": 1000, "pytorch-lightning_version": "2.0.0",
                "state_dict": weights}, path)
    args = {"method": "mixmask_mocov2plus", "backbone": {"name": "resnet18", "kwargs": SPEC},
            "data": {"dataset": "cifar100"}, "max_epochs": 400,
            "method_kwargs": {"mixmask": {"enabled": True, "fill": "mix"},
                              "unmix": {"enabled": True}}}
    (folder / "args.json").write_text(json.dumps(args))
    return path


def test_official_checkpoint_loads_encoder_q_only(tmp_path):
    state = resnet_state()
    path = official_checkpoint(tmp_path / "checkpoint_0199.pth.tar", state)
    backbone, info = load_backbone(path)
    assert info["format"] == "official" and info["name"] == "resnet18"
    assert info["kwargs"] == {"width": 0.125, "cifar_stem": True}
    assert_same_weights(backbone, state)
    obj = load_checkpoint_file(path)
    assert provenance(path, obj, "official")["epochs"] == 200


def test_solo_learn_checkpoint_loads_backbone_not_momentum(tmp_path):
    state = resnet_state(1)
    path = solo_learn_checkpoint(tmp_path / "run", state)
    obj = load_checkpoint_file(path)
    weights, fmt = split_backbone(obj)
    assert fmt == "solo-learn"
    info = provenance(path, obj, fmt)
    assert (info["method"], info["variant"], info["epochs"], info["pretrain_dataset"]) == (
        "mocov2plus", "mixmask_star", 400, "cifar100")
    backbone, _ = load_backbone(path)
    assert_same_weights(backbone, state)


def test_linear_config_completes_the_backbone_from_the_checkpoint(tmp_path):
    """``backbone.name: resnet18`` in an evaluation config loads a 1/8-width CIFAR model."""
    from solo_mixmask.eval.linear import load_pretrained

    state = resnet_state(2)
    path = official_checkpoint(tmp_path / "ckpt.pth.tar", state)
    cfg = OmegaConf.create({"pretrained_feature_extractor": str(path),
                            "backbone": {"name": "resnet18", "kwargs": {}}})
    backbone, info = load_pretrained(cfg)
    assert_same_weights(backbone, state)
    assert cfg.backbone.kwargs.width == 0.125 and info["checkpoint_format"] == "official"


# ---------------------------------------------------------------------------------- bad input
def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line_error(rc: int, err: str, text: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and text in last, err


@pytest.fixture()
def bare_resnet(tmp_path) -> Path:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet_state(3), path)
    return path


def knn_args(ckpt, train, val, *extra):
    return ["knn", ckpt, "--train-path", train, "--val-path", val, "--num-workers", "0",
            "--no-record", *extra]


@pytest.mark.data
def test_checkpoint_without_backbone_weights(tmp_path, cifar_train, cifar_test, capsys):
    path = tmp_path / "classifier_only.ckpt"
    torch.save({"state_dict": {"classifier.weight": torch.zeros(10, 64),
                               "classifier.bias": torch.zeros(10)}}, path)
    rc, err = run_cli(capsys, *knn_args(path, cifar_train, cifar_test))
    assert_one_line_error(rc, err, "checkpoint has no backbone weights")


@pytest.mark.data
def test_backbone_mismatch(bare_resnet, cifar_train, cifar_test, capsys):
    rc, err = run_cli(capsys, *knn_args(bare_resnet, cifar_train, cifar_test,
                                        "--backbone", "resnet50"))
    assert_one_line_error(rc, err, "backbone mismatch: asked for resnet50 but the checkpoint "
                                   "holds resnet18 weights")


@pytest.mark.data
def test_backbone_shape_mismatch(bare_resnet, cifar_train, cifar_test, capsys):
    rc, err = run_cli(capsys, *knn_args(bare_resnet, cifar_train, cifar_test, "--backbone",
                                        "resnet18", "--backbone-kwargs", '{"width": 0.25}'))
    assert_one_line_error(rc, err, "does not match the checkpoint")
    assert "size mismatch" in err


@pytest.mark.data
def test_label_count_does_not_match_the_data(bare_resnet, cifar_train, cifar_test, capsys):
    rc, err = run_cli(capsys, *knn_args(bare_resnet, cifar_train, cifar_test,
                                        "--dataset", "cifar100"))
    assert_one_line_error(rc, err, "label count mismatch: data.dataset=cifar100 has 100 classes but")


@pytest.mark.data
def test_val_classes_differ_from_train(bare_resnet, cifar_train, cifar_test, tmp_path, capsys):
    val = tmp_path / "val9"
    for folder in sorted(p for p in cifar_test.iterdir() if p.is_dir())[:9]:
        shutil.copytree(folder, val / folder.name)
    rc, err = run_cli(capsys, *knn_args(bare_resnet, cifar_train, val, "--dataset", "custom"))
    assert_one_line_error(rc, err, "has 10 classes")


@pytest.mark.data
def test_empty_training_data(bare_resnet, cifar_test, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = run_cli(capsys, *knn_args(bare_resnet, empty, cifar_test))
    assert_one_line_error(rc, err, "data path is empty")


def test_empty_feature_bank():
    test = torch.randn(4, 8)
    with pytest.raises(DataError, match="feature bank is empty"):
        knn_accuracy(torch.empty(0, 8), torch.empty(0, dtype=torch.long), test,
                     torch.zeros(4, dtype=torch.long), num_classes=10)


def linear_args(command: str, folder: str, name: str, ckpt, train, val, out: Path, *extra):
    return [command, "--config-path", REPO / "scripts" / command / folder, "--config-name", name,
            f"pretrained_feature_extractor={ckpt}", f"data.train_path={train}",
            f"data.val_path={val}", "data.num_workers=0", "accelerator=cpu", "devices=1",
            "precision=32", f"checkpoint.dir={out / 'runs'}", f"results_dir={out / 'results'}",
            *extra]


@pytest.mark.data
def test_linear_label_count_mismatch_writes_nothing(bare_resnet, cifar_train, cifar_test,
                                                    tmp_path, capsys):
    rc, err = run_cli(capsys, *linear_args("linear", "cifar", "mocov2plus.yaml", bare_resnet,
                                           cifar_train, cifar_test, tmp_path,
                                           "data.dataset=cifar100"))
    assert_one_line_error(rc, err, "label count mismatch")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


@pytest.mark.data
def test_linear_needs_a_checkpoint(cifar_train, cifar_test, tmp_path, capsys):
    rc, err = run_cli(capsys, "linear", "--config-path", REPO / "scripts/linear/cifar",
                      "--config-name", "byol.yaml")
    assert_one_line_error(rc, err, "set pretrained_feature_extractor=PATH")
    rc, err = run_cli(capsys, *linear_args("linear", "cifar", "byol.yaml", tmp_path / "nope.ckpt",
                                           cifar_train, cifar_test, tmp_path))
    assert_one_line_error(rc, err, "checkpoint not found")


@pytest.mark.data
def test_subset_file_naming_unknown_images(bare_resnet, cifar_train, cifar_test, tmp_path,
                                           capsys):
    first = sorted(cifar_train.rglob("*.jpg"))[0].relative_to(cifar_train).as_posix()
    subset = tmp_path / "subset.txt"
    subset.write_text(f"{first}\nairplane/not-a-cifar-image.jpg\n")
    rc, err = run_cli(capsys, *linear_args("semi", "cifar", "1pct.yaml", bare_resnet, cifar_train,
                                           cifar_test, tmp_path, "data.dataset=cifar10",
                                           f"semi.subset_file={subset}"))
    assert_one_line_error(rc, err, "names 1 images that are not in")
    assert "not-a-cifar-image.jpg" in err and not (tmp_path / "runs").exists()


def test_zoo_converted_checkpoint_keeps_its_provenance(tmp_path):
    """A file converted by ``solo-mixmask zoo convert`` (no zoo entry): the epoch of the original
    survives, the variant is not guessed."""
    from solo_mixmask.zoo.convert import convert

    state = resnet_state(4)
    out, _ = convert(official_checkpoint(tmp_path / "ckpt.pth.tar", state),
                     tmp_path / "converted.pt")
    obj = load_checkpoint_file(out)
    weights, fmt = split_backbone(obj)
    info = provenance(out, obj, fmt)
    assert (fmt, info["method"], info["variant"], info["epochs"]) == (
        "solo_mixmask", "mocov2plus", "unknown", 200)
    backbone, _ = load_backbone(out)
    assert_same_weights(backbone, state)
