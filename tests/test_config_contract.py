"""The config contract: the schema is the only place a default lives, every ``data.format`` is one
builder of the data-pipeline registry, and configs written by older releases are completed from
the schema rather than from defaults scattered through the code.

The source walk parses every module outside ``solo_mixmask/config/`` (nothing is imported) and
reports each read of a config key with a literal default: ``select``/``OmegaConf.select``/
``omegaconf_select`` with a default, and ``.get``/``.pop``/``.setdefault("key", default)`` or
``getattr(x, "key", default)`` on a config-looking name (``cfg``, ``*_cfg``, or a section such as
``kw``, ``sc``, ``knn``, ``kwargs``). A
default of ``None`` says "absent" and is allowed; so are defaults that are not literals (a field's
default read from the schema with ``field_default``). The planted-violation test runs the same
walk on a throwaway module, so a walk that reports nothing fails there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from solo_mixmask.config import load_config
from solo_mixmask.config.branches import BranchConfig, parse_branch_cfg
from solo_mixmask.config.eval_schema import EvalDataConfig
from solo_mixmask.config.schema import DataConfig, PretrainConfig
from solo_mixmask.config.validation import complete, field_default
from solo_mixmask.data.datasets import scan_image_folder
from solo_mixmask.data.pipeline import PIPELINES
from solo_mixmask.data.sources import check_images, image_source
from solo_mixmask.errors import DataError

ROOT = Path(__file__).resolve().parents[1] / "solo_mixmask"
REPO = ROOT.parent
SELECTS = {"select", "omegaconf_select"}
SECTIONS = {"kw", "sc", "knn", "perf", "aug", "augs", "data", "dev", "opt", "optimizer", "kwargs"}


def _root_name(node: ast.AST) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else ""


def _configish(node: ast.AST) -> bool:
    name = _root_name(node)
    return "cfg" in name.lower() or name in SECTIONS or (
        isinstance(node, ast.Attribute) and _root_name(node) in ("self", "cls")
        and any(part in ast.unparse(node) for part in ("cfg", ".kw")))


def _literal(node: ast.AST) -> bool:
    """A non-None constant, or a container / signed number made of constants."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, ast.UnaryOp):
        return _literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(isinstance(e, ast.Constant) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(isinstance(v, ast.Constant) for v in node.values)
    return False


def literal_defaults(source: str, where: str) -> list[str]:
    """Each read of a config key with a literal default in ``source``, as ``where:line: code``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else "")
        default = None
        if name in SELECTS:
            default = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "default"), None)
        elif name in ("get", "pop", "setdefault") and isinstance(func, ast.Attribute) \
                and _configish(func.value):
            default = node.args[1] if len(node.args) > 1 else None
        elif name == "getattr" and len(node.args) > 2 and _configish(node.args[0]):
            default = node.args[2]
        if default is not None and _literal(default):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_config_reads_a_key_with_a_literal_default():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] == "config":
            continue
        found += literal_defaults(path.read_text(), str(path.relative_to(REPO)))
    assert not found, "defaults belong to the schema (config/schema.py):\n" + "\n".join(found)


def test_the_walk_finds_planted_defaults():
    planted = '''
def f(cfg, self, args):
    a = select(cfg, "knn_eval.k", 20)
    b = OmegaConf.select(cfg, "seed", default=5)
    c = cfg.method_kwargs.get("symmetric", True)
    d = getattr(cfg.data, "fraction", -1.0)
    e = self.cfg.knn_eval.get("vote", "weighted")
    g = kwargs.pop("momentum", 0.9)
    h = cfg.optimizer.kwargs.setdefault("eta", 1e-3)
    ok1 = select(cfg, "resume_from_checkpoint")
    ok2 = OmegaConf.select(cfg, "x", default=None)
    ok3 = args.get("epoch", 0)
    ok4 = omegaconf_select(cfg, "seed", field_default(LightningKeys, "seed"))
'''
    found = literal_defaults(planted, "planted.py")
    assert [line.split(":")[1] for line in found] == ["3", "4", "5", "6", "7", "8", "9"], found


def test_every_data_format_of_the_schema_has_one_builder():
    from dataclasses import fields

    (fmt,) = [f for f in fields(DataConfig) if f.name == "format"]
    assert set(fmt.metadata["choices"]) == set(PIPELINES)
    assert field_default(DataConfig, "format") in PIPELINES


def test_a_stored_config_of_an_older_release_is_completed_from_the_schema():
    cfg = load_config(str(REPO / "scripts/pretrain/cifar"), "mocov2plus_mixmask.yaml")
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored["knn_eval"] = {"enabled": True, "k": 7}  # written before T, vote, feature existed
    stored["retired_key"] = 1  # a key this release no longer has
    stored["augmentations"][0].pop("equalization", None)
    full = complete(stored, PretrainConfig)
    assert full.knn_eval.k == 7 and full.knn_eval.vote == field_default(
        type(PretrainConfig().knn_eval), "vote")
    assert full.knn_eval.T == PretrainConfig().knn_eval.T
    assert "retired_key" not in full
    assert full.augmentations[0].equalization.prob == 0.0
    assert full.method == cfg.method and full.optimizer.lr == cfg.optimizer.lr


@pytest.mark.data
def test_evaluation_data_reads_images_with_the_same_checks(cifar_train, tmp_path):
    """``EvalDataConfig`` has ``verify`` and ``skip_corrupt`` as pretraining's ``data`` does; both
    read images through ``sources.image_source``."""
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(cifar_train, tree)
    first_class = sorted(p for p in tree.iterdir() if p.is_dir())[0]
    victim = sorted(first_class.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])  # a torn JPEG
    base = {"dataset": "cifar10", "train_path": str(tree), "val_path": str(tree)}
    data = OmegaConf.structured(EvalDataConfig(**base))
    with pytest.raises(DataError, match=victim.name):
        image_source(data, str(tree), True)
    data.skip_corrupt = True
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        kept = image_source(data, str(tree), True)
    assert victim.as_posix() not in kept.paths
    data.verify = "none"
    assert len(check_images(scan_image_folder(tree), str(tree), data).paths) == len(kept.paths) + 1


@pytest.mark.parametrize("kwargs", [{}, {"mixmask": {"ratio": [0.3, 0.7], "targets": "both"}},
                                    {"mixmask": {"enabled": False}, "unmix": {"enabled": True}},
                                    {"mixmask": {"fill": "zero", "grid": 4}}])
def test_the_branches_are_parsed_once_and_read_back_as_parsed(kwargs):
    """A variant's constructor reads the resolved ``method_kwargs`` back
    (``BranchConfig.from_method_kwargs``) instead of parsing them a second time."""
    spec = parse_branch_cfg(kwargs, 32, symmetric=True)
    stored = OmegaConf.create(spec.as_method_kwargs())  # as the parsed config holds them
    assert BranchConfig.from_method_kwargs(stored) == spec


# ------------------------------------------------------------------------------- optimizers
def _probe_cfg(tmp_path, *overrides):
    from solo_mixmask.eval.linear import parse_linear_cfg

    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"")
    folder = REPO / "scripts/linear/cifar"
    return parse_linear_cfg(load_config(str(folder), "mocov2plus.yaml",
                                        [f"pretrained_feature_extractor={ckpt}", *overrides]))


def test_optimizer_kwargs_left_out_take_the_schemas_defaults_in_pretraining_and_the_probe(tmp_path):
    import torch

    from solo_mixmask.config.schema import LARSKwargs, SGDKwargs
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg
    from solo_mixmask.utils.optim import configure_optimization

    cfg = parse_pretrain_cfg(load_config(str(REPO / "scripts/pretrain/cifar"), "byol.yaml",
                                         ["~optimizer.kwargs"]))
    assert cfg.optimizer.name == "lars"
    assert dict(cfg.optimizer.kwargs) == {f: field_default(LARSKwargs, f) for f in (
        "momentum", "dampening", "nesterov", "eta", "clip_lr", "exclude_bias_n_norm")}
    w = torch.nn.Parameter(torch.ones(2, 2))
    opt = configure_optimization([{"params": [w]}], cfg.optimizer, cfg.scheduler, lambda: 10,
                                 int(cfg.max_epochs))["optimizer"]
    assert (type(opt).__name__, opt.defaults["trust_coeff"], opt.defaults["momentum"]) == (
        "Lars", field_default(LARSKwargs, "eta"), field_default(LARSKwargs, "momentum"))
    probe = _probe_cfg(tmp_path)
    assert probe.optimizer.kwargs.momentum == field_default(SGDKwargs, "momentum") != 0


def test_the_probe_honours_its_decay_exemption_and_schedule_interval(tmp_path):
    """The probe and pretraining build their optimizer through one function, so keys the
    evaluation schema accepts are not ignored by the probe."""
    from solo_mixmask.eval.linear import LinearModel

    cfg = _probe_cfg(tmp_path, "optimizer.exclude_bias_n_norm_wd=true",
                     "optimizer.weight_decay=0.0005", "scheduler.interval=epoch")
    out = LinearModel(None, 8, 10, cfg).configure_optimizers()
    groups = {g["name"]: g["weight_decay"] for g in out["optimizer"].param_groups}
    assert groups == {"classifier": 0.0005, "classifier_no_decay": 0.0}
    assert out["lr_scheduler"]["interval"] == "epoch"
    # an epoch schedule steps once per epoch: the decay at epoch 60 of 100
    sched = out["lr_scheduler"]["scheduler"]
    assert sched.lr_lambdas[0](59) == 1.0 and sched.lr_lambdas[0](60) == pytest.approx(0.1)


@pytest.mark.parametrize("overrides,message", [
    (["+optimizer.kwargs.momentum=1.5"], "optimizer.kwargs.momentum=1.5: must be less than 1"),
    (["optimizer.kwargs.eta=fast"], "optimizer.kwargs.eta='fast': expected a number"),
    (["optimizer.name=adam", "~optimizer.kwargs", "+optimizer.kwargs.betas=[0.9,1.5]"],
     r"optimizer.kwargs.betas=\[0.9, 1.5\]: use two numbers in \[0, 1\)"),
    (["optimizer.name=adam"], "unknown key 'optimizer.kwargs.clip_lr'; optimizer adam takes betas"),
])
def test_a_bad_optimizer_kwarg_is_a_config_error(overrides, message):
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg
    from solo_mixmask.errors import ConfigError

    cfg = load_config(str(REPO / "scripts/pretrain/cifar"), "byol.yaml", overrides)
    with pytest.raises(ConfigError, match=message):
        parse_pretrain_cfg(cfg)


def test_the_trainer_is_built_from_its_typed_section(tmp_path):
    """solo-learn keeps the Trainer's keys at the top level; they reach Lightning as one typed
    section, in pretraining and in the probe, and each key that is set arrives."""
    from solo_mixmask.config.schema import LightningKeys, trainer_section
    from solo_mixmask.engine.pretrain import parse_pretrain_cfg
    from solo_mixmask.engine.trainer import trainer_kwargs

    cfg = parse_pretrain_cfg(load_config(str(REPO / "scripts/pretrain/cifar"), "byol.yaml", [
        "gradient_clip_val=0.5", "limit_train_batches=3", "devices=[0]",
        "accumulate_grad_batches=2", "max_epochs=7"]))
    keys = trainer_section(cfg)
    assert type(keys) is LightningKeys and keys.devices == [0]
    kw = trainer_kwargs(keys, tmp_path, [], None)
    assert (kw["gradient_clip_val"], kw["limit_train_batches"], kw["devices"],
            kw["accumulate_grad_batches"], kw["max_epochs"]) == (0.5, 3, 1, 2, 7)
    probe = trainer_section(_probe_cfg(tmp_path, "max_epochs=4", "limit_val_batches=2"))
    kw = trainer_kwargs(probe, tmp_path, [], None)
    assert (kw["max_epochs"], kw["limit_val_batches"]) == (4, 2)
