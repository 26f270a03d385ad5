"""MixMask inside upstream solo-learn 1.0.6: the registered variants train in solo-learn's own classes
on real CIFAR-10 images, MoCo uses one queue snapshot per step, and the Hydra callback registers the
variants before solo-learn's pretraining runs.

Runs only where solo-learn is importable (``pip install "solo-mixmask[solo]"``).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

solo = pytest.importorskip(
    "solo", reason="solo-learn is not installed (pip install 'solo-mixmask[solo]', "
    "see docs/solo-learn.md)")

from solo.args.pretrain import parse_cfg  # noqa: E402
from solo.data.pretrain_dataloader import (  # noqa: E402
    FullTransformPipeline,
    NCropAugmentation,
    build_transform_pipeline,
    prepare_dataloader,
    prepare_datasets,
)
from solo.methods import BYOL, METHODS, MoCoV2Plus, SimCLR, SimSiam  # noqa: E402

from conftest import AUG_32  # noqa: E402
from solo_mixmask.errors import ConfigError  # noqa: E402
from solo_mixmask.mixmask import Branches  # noqa: E402
from solo_mixmask.solo import NAMES, register  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.data, pytest.mark.slow]

AUG = {**AUG_32, "equalization": {"prob": 0.0}}  # solo-learn asks for every op
KWARGS = {
    "mocov2plus": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 64,
                   "temperature": 0.2},
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32, "temperature": 0.2},
    "simsiam": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 16},
}
BASES = {"mixmask_mocov2plus": MoCoV2Plus, "mixmask_byol": BYOL, "mixmask_simclr": SimCLR,
         "mixmask_simsiam": SimSiam}


def solo_cfg(method: str, train_path: Path, tmp: Path, **branch: Any) -> dict[str, Any]:
    """A tiny config in solo-learn's own vocabulary (real images as a ``custom`` ImageFolder)."""
    kwargs = dict(KWARGS[method.removeprefix("mixmask_")])
    kwargs["mixmask"] = {"enabled": True, "grid": 2, **branch.pop("mixmask", {})}
    kwargs.update(branch)
    return {
        "name": f"test-{method}", "method": method,
        "backbone": {"name": "resnet18"},
        "method_kwargs": kwargs,
        "momentum": {"base_tau": 0.99, "final_tau": 1.0},
        "data": {"dataset": "custom", "train_path": str(train_path), "val_path": None,
                 "format": "image_folder", "num_workers": 0},
        "augmentations": [dict(AUG)],
        "optimizer": {"name": "sgd", "batch_size": 16, "lr": 0.3, "classifier_lr": 0.1,
                      "weight_decay": 1e-5},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 0},
        "checkpoint": {"enabled": False, "dir": str(tmp / "trained_models"), "frequency": 1},
        "auto_resume": {"enabled": False},
        "max_epochs": 1,
        "devices": "1",
        "accelerator": "cpu",
        "strategy": "auto",
        "precision": 32,
    }


def parsed(cfg: dict[str, Any]):
    conf = OmegaConf.create(cfg)
    OmegaConf.set_struct(conf, False)
    return parse_cfg(conf)


def loader(cfg) -> torch.utils.data.DataLoader:
    transform = FullTransformPipeline([
        NCropAugmentation(build_transform_pipeline(cfg.data.dataset, aug), aug.num_crops)
        for aug in cfg.augmentations])
    dataset = prepare_datasets(cfg.data.dataset, transform, train_data_path=cfg.data.train_path,
                               data_format="image_folder")
    return prepare_dataloader(dataset, batch_size=cfg.optimizer.batch_size, num_workers=0)


def test_register_puts_subclasses_of_solo_classes_into_methods():
    variants = register()
    assert sorted(variants) == sorted(NAMES)
    for name in NAMES:
        assert METHODS[name] is variants[name]
        assert issubclass(METHODS[name], BASES[name]), name
    assert register() == variants  # idempotent


CASES = [
    ("mixmask_mocov2plus", {}),
    # the paper's asymmetric MoCo v2 with MixMask* (Un-Mix + MixMask, different permutation)
    ("mixmask_mocov2plus", {"symmetric": False, "unmix": {"enabled": True},
                            "mixmask": {"permutation": "different"}}),
    ("mixmask_byol", {}),
    ("mixmask_simclr", {"mixmask": {"crops": "both"}}),
    ("mixmask_simsiam", {"mixmask": {"fill": "zero", "pattern": "discrete"}}),
    # the paper's CIFAR form: the mixture scored against both crops' targets
    ("mixmask_mocov2plus", {"mixmask": {"targets": "both"}}),
    ("mixmask_byol", {"mixmask": {"targets": "both"}, "unmix": {"enabled": True,
                                                                "targets": "both"}}),
]


@pytest.mark.parametrize("method,branch", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
def test_variant_trains_inside_solo_classes(method, branch, cifar_train, tmp_path):
    from lightning.pytorch import Trainer, seed_everything

    register()
    cfg = parsed(solo_cfg(method, cifar_train, tmp_path, **copy.deepcopy(branch)))
    seed_everything(0)
    model = METHODS[method](cfg)
    assert isinstance(model, BASES[method]) and isinstance(model.branches, Branches)
    before = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, loader(cfg))
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    branch_keys = [k for k in metrics if k.startswith(("train_mixmask_loss", "train_erase_loss",
                                                       "train_unmix_loss"))
                   and not k.endswith(("_step", "_epoch"))]
    expected = 2 if (branch.get("unmix") or branch.get("mixmask", {}).get("crops")) else 1
    assert len(branch_keys) == expected, sorted(metrics)
    for key in branch_keys:
        assert torch.isfinite(metrics[key]), key
    assert torch.isfinite(metrics["train_class_loss"])
    base_loss = {"mixmask_mocov2plus": "train_nce_loss", "mixmask_simclr": "train_nce_loss",
                 "mixmask_byol": "train_neg_cos_sim", "mixmask_simsiam": "train_neg_cos_sim"}
    assert torch.isfinite(metrics[base_loss[method]])  # solo-learn's own loss term
    after = model.backbone.state_dict()
    changed = [k for k, v in before.items() if v.is_floating_point()
               and not torch.equal(v, after[k])]
    assert any(k.endswith("conv1.weight") for k in changed), "backbone weights did not change"
    if method == "mixmask_mocov2plus":
        # the queue advances once per step: 2 steps x 16 keys
        assert int(model.queue_ptr) == 32 % model.queue_size


@pytest.mark.parametrize("targets", ["other", "both"])
def test_mocov2plus_uses_one_queue_snapshot_then_enqueues_once(targets, cifar_train, tmp_path):
    """The loss equals solo-learn's MoCo loss plus the branches, all against the queue as it was
    before the step; the keys are enqueued once, afterwards. With ``targets: both`` the mixture of
    crop 1 is also scored against crop 1's own keys."""
    from solo.losses.mocov2plus import mocov2plus_loss_func as solo_moco

    register()
    cfg = parsed(solo_cfg("mixmask_mocov2plus", cifar_train, tmp_path,
                          unmix={"enabled": True, "targets": targets},
                          mixmask={"targets": targets}))
    torch.manual_seed(0)
    model = METHODS["mixmask_mocov2plus"](cfg)
    model.train()
    batch = next(iter(loader(cfg)))
    _, crops, targets = batch
    queue0 = model.queue.clone()
    ptr0 = int(model.queue_ptr)
    rng0 = copy.deepcopy(model.branches.state_dict())

    loss = model.training_step(batch, 0)

    with torch.no_grad():
        outs = [model(x) for x in crops]
        keys = [model.momentum_forward(x)["z"] for x in crops]
        q1, q2 = (o["z"] for o in outs)
        k1, k2 = keys
        T = model.temperature
        nce = (solo_moco(q1, k2, queue0[1], T) + solo_moco(q2, k1, queue0[0], T)) / 2
        cls = sum(torch.nn.functional.cross_entropy(o["logits"], targets) for o in outs) / 2

        def branch_loss(queue: torch.Tensor) -> torch.Tensor:
            from solo_mixmask.losses import mocov2plus_loss_func

            branches = Branches(model.branches.cfg, model.branches.mean, model.branches.std)
            branches.load_state_dict(copy.deepcopy(rng0))
            value, _ = branches(crops[0], model.mix_embed,
                                lambda e: mocov2plus_loss_func(e, k2, queue[1], T,
                                                               reduction="none"),
                                lambda e: mocov2plus_loss_func(e, k1, queue[0], T,
                                                               reduction="none"))
            return value

        expected = nce + cls + branch_loss(queue0)
        assert float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
        # against the queue after the enqueue the branch loss is different: the check can fail
        assert float(branch_loss(model.queue)) != pytest.approx(float(branch_loss(queue0)),
                                                                rel=1e-4, abs=1e-4)

    n = len(k1)
    assert int(model.queue_ptr) == (ptr0 + n) % model.queue_size
    assert torch.allclose(model.queue[0, :, ptr0:ptr0 + n], k1.T, atol=1e-5)
    assert torch.allclose(model.queue[1, :, ptr0:ptr0 + n], k2.T, atol=1e-5)
    untouched = torch.ones(model.queue_size, dtype=torch.bool)
    untouched[ptr0:ptr0 + n] = False
    assert torch.equal(model.queue[:, :, untouched], queue0[:, :, untouched])


def test_bad_mixmask_settings_are_config_errors(cifar_train, tmp_path):
    register()
    cfg = parsed(solo_cfg("mixmask_mocov2plus", cifar_train, tmp_path, symmetric=False,
                          mixmask={"crops": "both"}))
    with pytest.raises(ConfigError, match="crops='both' needs a symmetric"):
        METHODS["mixmask_mocov2plus"](cfg)
    cfg = parsed(solo_cfg("mixmask_byol", cifar_train, tmp_path, mixmask={"ratio": 1.5}))
    with pytest.raises(ConfigError, match="ratio"):
        METHODS["mixmask_byol"](cfg)


# ------------------------------------------------------------------ Hydra / command line, end to end

HYDRA_APP = '''
import hydra
from solo.methods import METHODS


@hydra.main(version_base="1.2", config_path={config_dir!r}, config_name="probe")
def main(cfg):
    print("REGISTERED" if "mixmask_byol" in METHODS else "NOT-REGISTERED")
    print("SCHEDULER", cfg.scheduler.name, cfg.scheduler.warmup_epochs)


main()
'''

CALLBACK = "+hydra.callbacks.mixmask._target_=solo_mixmask.solo.MixMaskCallback"


def run(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_hydra_callback_registers_before_the_task_runs(tmp_path):
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "probe.yaml").write_text(
        "hydra:\n  output_subdir: null\n  run:\n    dir: .\n"
        "scheduler:\n  name: cosine\n  warmup_epochs: 10\n")
    app = tmp_path / "app.py"
    app.write_text(HYDRA_APP.format(config_dir=str(config_dir)))
    with_cb = run([str(app), CALLBACK], tmp_path)
    assert with_cb.returncode == 0, with_cb.stderr[-2000:]
    assert "REGISTERED" in with_cb.stdout.split()
    # this package's `cosine` reaches the task as solo-learn's equivalent
    assert "SCHEDULER warmup_cosine 0" in with_cb.stdout
    without = run([str(app)], tmp_path)
    assert without.returncode == 0, without.stderr[-2000:]
    assert "NOT-REGISTERED" in without.stdout


def _tiny_overrides(train: Path, out: Path, devices: str = "1") -> list[str]:
    return [f"data.train_path={train}", "data.val_path=null", "data.num_workers=0",
            "optimizer.batch_size=16", "accelerator=cpu", f"devices={devices}", "precision=32",
            "sync_batchnorm=false", "max_epochs=1", "+limit_train_batches=2",
            "+enable_progress_bar=false", "knn_eval.enabled=false", "auto_resume.enabled=false",
            f"checkpoint.dir={out}", "method_kwargs.proj_hidden_dim=64"]


def _checkpoint(out: Path, method: str) -> dict[str, Any]:
    found = sorted((out / method).rglob("*.ckpt"))
    assert found, f"no checkpoint under {out / method}"
    return torch.load(found[-1], map_location="cpu", weights_only=True)


def test_solo_pretrain_runs_the_repository_config(cifar_train, tmp_path):
    """``solo-mixmask solo-pretrain`` on scripts/pretrain/cifar/mocov2plus_mixmask.yaml
    (asymmetric MoCo v2): solo-learn's parse_cfg accepts it, after the one translation it needs
    (``devices``, which solo-learn counts with ``len``), and solo-learn's own Checkpointer writes a
    checkpoint that this package reads."""
    from solo_mixmask.eval.checkpoints import load_backbone

    out = tmp_path / "trained"
    result = run(["-m", "solo_mixmask", "solo-pretrain", "--config-path",
                  str(REPO / "scripts/pretrain/cifar"), "--config-name", "mocov2plus_mixmask.yaml",
                  *_tiny_overrides(cifar_train, out), "data.dataset=custom",
                  "method_kwargs.queue_size=64"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices=1 -> '1'" in result.stdout
    ckpt = _checkpoint(out, "mixmask_mocov2plus")
    assert int(ckpt["state_dict"]["queue_ptr"]) == 32
    assert "mixmask_branches" in ckpt
    path = sorted((out / "mixmask_mocov2plus").rglob("*.ckpt"))[-1]
    backbone, info = load_backbone(path)
    assert info["format"] == "solo-learn" and info["name"] == "resnet18"


def test_main_pretrain_with_the_callback(cifar_train, tmp_path):
    """solo-learn's own main_pretrain.py (from the checkout solo is installed from) runs a
    repository MixMask config (Tiny-ImageNet, which solo-learn knows as ``custom`` data) once the
    callback is on the command line, and only then."""
    script = Path(solo.__file__).resolve().parents[1] / "main_pretrain.py"
    if not script.is_file():
        pytest.skip("solo-learn is not installed from a checkout: main_pretrain.py not found")
    out = tmp_path / "trained"
    config = [str(script), "--config-path", str(REPO / "scripts/pretrain/tiny-imagenet"),
              "--config-name", "simsiam_mixmask.yaml"]
    result = run([*config, *_tiny_overrides(cifar_train, out), CALLBACK,
                  "++method_kwargs.mixmask.targets=both"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data.dataset=tiny-imagenet -> custom" in result.stderr
    ckpt = _checkpoint(out, "mixmask_simsiam")
    assert "mixmask_branches" in ckpt and any(k.startswith("predictor.")
                                              for k in ckpt["state_dict"])
    # without the callback (and with solo-learn's own vocabulary) the method is unknown
    refused = run([*config, *_tiny_overrides(cifar_train, tmp_path / "refused", devices="'1'"),
                   "data.dataset=custom"], tmp_path)
    assert refused.returncode != 0
    assert "assert cfg.method in METHODS" in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()


def test_vanilla_solo_simsiam_checkpoint_converts(cifar_train, tmp_path):
    """solo-learn's own SimSiam pickles its fixed-lr scheduler hook into checkpoints; the zoo
    converter reads such a file without running solo-learn code and keeps the online backbone."""
    from lightning.pytorch import Trainer

    from solo_mixmask.errors import CheckpointError
    from solo_mixmask.eval.checkpoints import load_backbone, load_checkpoint_file
    from solo_mixmask.zoo import convert

    cfg = parsed({**solo_cfg("mixmask_simsiam", cifar_train, tmp_path), "method": "simsiam"})
    model = METHODS["simsiam"](cfg)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(model, loader(cfg))
    path = tmp_path / "simsiam.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint_file(path)  # the hook is there
    out, info = convert(path, dataset="custom")
    assert info["converted_from"]["format"] == "solo-learn"
    converted = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    expected = model.backbone.state_dict()
    assert sorted(converted) == sorted(f"backbone.{k}" for k in expected)
    for k, v in expected.items():
        assert torch.equal(converted[f"backbone.{k}"], v), k
    backbone, _ = load_backbone(out)
    model.backbone.eval()
    backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), model.backbone(x), atol=1e-5)
