"""The paper's own CIFAR protocol: each objective equals an independent computation on real crops.

MoCo in Un-Mix's CIFAR form (scripts/pretrain/paper): the summed symmetric loss over one shared
queue (the snapshot taken before this step's keys go in), plus the mixture of crop 1 scored against
the keys of crop 2 and of crop 1, each pair weighted lambda / 1 - lambda; 2 x batch keys enqueued.
BYOL, SimCLR and SimSiam take the same ``targets: both`` form. The mixed batch is observed as the
model receives it, and lambda is read back from it, so nothing below reuses the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, eval_data, tiny_cfg
from solo_mixmask.config import load_config
from solo_mixmask.data.loaders import build_pretrain_dataset, build_pretrain_loader
from solo_mixmask.data.spec import LoaderSpec
from solo_mixmask.engine.pretrain import parse_pretrain_cfg
from solo_mixmask.errors import ConfigError
from solo_mixmask.methods import METHODS

BRANCHES = {
    "unmix": {"mixmask": {"enabled": False},
              "unmix": {"enabled": True, "prob": 1.0, "targets": "both"}},  # global mixup
    "mixmask": {"mixmask": {"enabled": True, "grid": 2, "ratio": 0.5, "permutation": "reverse",
                            "targets": "both"}},
}


def build(method: str, cifar_train: Path, tmp_path: Path, branch: str, **kw):
    cfg = tiny_cfg(f"mixmask_{method}", cifar_train, tmp_path)
    cfg.method_kwargs.update(BRANCHES[branch])
    for key, value in kw.items():
        cfg.method_kwargs[key] = value
    cfg = parse_pretrain_cfg(cfg)
    torch.manual_seed(0)
    model = METHODS[cfg.method](cfg)
    spec = LoaderSpec.from_config(cfg, gpu=False)
    _, crops, _ = next(iter(build_pretrain_loader(spec, build_pretrain_dataset(spec))))
    return model, [c.contiguous(memory_format=torch.channels_last) for c in crops]


def observe_mixtures(model) -> list[torch.Tensor]:
    """Records the images the model embeds for its mixing branch (behaviour unchanged)."""
    seen: list[torch.Tensor] = []
    embed = model.mix_embed

    def recording(x):
        seen.append(x.detach().clone())
        return embed(x)

    model.mix_embed = recording
    return seen


def read_lambda(mixed: torch.Tensor, x: torch.Tensor, branch: str) -> float:
    """lambda of a mixture of ``x`` with the reversed batch, from the pixels themselves."""
    rev = x.flip(0)
    if branch == "unmix":  # mixed = lam * x + (1 - lam) * rev, solved by least squares
        d = x - rev
        return float(((mixed - rev) * d).sum() / (d * d).sum())
    # a 2 x 2 grid: each quadrant is wholly x or wholly the filler; count the quadrants that are x
    h, w = x.shape[-2:]
    kept = 0
    for top in (0, h // 2):
        for left in (0, w // 2):
            block = (slice(None), slice(None), slice(top, top + h // 2), slice(left, left + w // 2))
            kept += int((mixed[block] == x[block]).float().mean() > 0.9)
    return kept / 4


def moco_ce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    pos = (q * k).sum(1) / t
    logits = torch.cat([pos[:, None], q @ queue / t], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


@pytest.mark.parametrize("branch", ["unmix", "mixmask"])
def test_paper_moco_objective(branch, cifar_train, tmp_path):
    model, (x1, x2) = build("mocov2plus", cifar_train, tmp_path, branch, proj_hidden_dim=0,
                            symmetric=True, symmetric_loss="sum", shared_queue=True,
                            bn_splits=1, shuffle_bn=False, queue_size=256)
    queue = F.normalize(torch.randn(model.queue.shape), dim=1)
    model.queue.copy_(queue)
    seen = observe_mixtures(model)
    out = model.ssl_forward([x1, x2])
    extra, _ = model.branch_losses([x1, x2], out)
    total = out["loss"] + extra
    model.after_ssl_step(out)

    (mixed,) = seen
    lam = read_lambda(mixed, x1, branch)
    assert 0 < lam < 1
    t = model.temperature

    def q(x):
        return F.normalize(model.projector(model.backbone(x)), dim=1)

    with torch.no_grad():
        k1, k2 = (F.normalize(model.momentum_projector(model.momentum_backbone(x)), dim=1)
                  for x in (x1, x2))
        qm = q(mixed)
        snap = queue[0]
        expected = (moco_ce(q(x1), k2, snap, t) + moco_ce(q(x2), k1, snap, t)
                    + lam * moco_ce(qm, k2, snap, t) + (1 - lam) * moco_ce(qm.flip(0), k2, snap, t)
                    + lam * moco_ce(qm, k1, snap, t) + (1 - lam) * moco_ce(qm.flip(0), k1, snap, t))
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    n = len(x1)
    assert model.queue.shape[0] == 1 and int(model.queue_ptr) == 2 * n
    assert torch.allclose(model.queue[0, :, :2 * n], torch.cat([k1, k2]).T, atol=1e-6)
    assert torch.equal(model.queue[0, :, 2 * n:], queue[0, :, 2 * n:])


def pair_losses(method: str, model, x1, x2):
    """Per-method loss L(embeddings, targets of crop c), mean over the batch, computed directly."""
    with torch.no_grad():
        if method == "byol":
            targets = [model.momentum_projector(model.momentum_backbone(x)) for x in (x1, x2)]
            embed = lambda x: model.predictor(model.projector(model.backbone(x)))  # noqa: E731
            loss = lambda e, c: (2 - 2 * F.cosine_similarity(e, targets[c])).mean()  # noqa: E731
        elif method == "simsiam":
            targets = [model.projector(model.backbone(x)) for x in (x1, x2)]
            embed = lambda x: model.predictor(model.projector(model.backbone(x)))  # noqa: E731
            loss = lambda e, c: (-F.cosine_similarity(e, targets[c])).mean()  # noqa: E731
        else:
            z = model.projector(torch.cat([model.backbone(x1), model.backbone(x2)])).chunk(2)

            def loss(e, c):
                logits = F.normalize(e, dim=1) @ F.normalize(z[c], dim=1).T / model.temperature
                return F.cross_entropy(logits, torch.arange(len(e)))

            embed = lambda x: model.projector(model.backbone(x))  # noqa: E731
    return embed, loss


@pytest.mark.parametrize("method", ["byol", "simclr", "simsiam"])
def test_targets_both_for_the_other_methods(method, cifar_train, tmp_path):
    extra = {"proj_bn": True, "embedding_bn": True} if method == "simclr" else {}
    model, (x1, x2) = build(method, cifar_train, tmp_path, "unmix", **extra)
    seen = observe_mixtures(model)
    out = model.ssl_forward([x1, x2])
    branch, _ = model.branch_losses([x1, x2], out)
    (mixed,) = seen
    lam = read_lambda(mixed, x1, "unmix")
    embed, loss = pair_losses(method, model, x1, x2)
    with torch.no_grad():
        e = embed(mixed)
        expected = sum(lam * loss(e, c) + (1 - lam) * loss(e.flip(0), c) for c in (1, 0))
    assert float(branch) == pytest.approx(float(expected), rel=1e-5)


def test_simclr_mixture_among_the_whole_batch(cifar_train, tmp_path):
    """``mix_candidates: batch``: each mixed embedding is scored among both clean crops' 2N
    embeddings (the target crop's first, positive at the same index), not the target crop's N."""
    model, (x1, x2) = build("simclr", cifar_train, tmp_path, "unmix", proj_bn=True,
                            embedding_bn=True, mix_candidates="batch")
    seen = observe_mixtures(model)
    out = model.ssl_forward([x1, x2])
    branch, _ = model.branch_losses([x1, x2], out)
    (mixed,) = seen
    lam = read_lambda(mixed, x1, "unmix")
    with torch.no_grad():
        z = model.projector(torch.cat([model.backbone(x1), model.backbone(x2)])).chunk(2)
        e = model.projector(model.backbone(mixed))

        def loss(e, c, keys):
            logits = F.normalize(e, dim=1) @ F.normalize(keys, dim=1).T / model.temperature
            return F.cross_entropy(logits, torch.arange(len(e)))

        def total(candidates):
            return sum(lam * loss(e, c, candidates(c)) + (1 - lam) * loss(e.flip(0), c,
                                                                            candidates(c))
                       for c in (1, 0))

        whole_batch = total(lambda c: torch.cat([z[c], z[1 - c]]))
        one_crop = total(lambda c: z[c])
    assert float(branch) == pytest.approx(float(whole_batch), rel=1e-5)
    assert abs(float(whole_batch) - float(one_crop)) > 1e-2 * float(one_crop)


@pytest.mark.parametrize("stop", [False, True])
def test_simclr_mixture_stop_gradient(stop, cifar_train, tmp_path):
    """``mix_stop_gradient``: the same branch loss, but the clean crops' embeddings get no
    gradient from it (they get one by default, as both sides of NT-Xent do)."""
    model, (x1, x2) = build("simclr", cifar_train, tmp_path, "unmix", mix_stop_gradient=stop)
    out = model.ssl_forward([x1, x2])
    for z in out["z"]:
        z.retain_grad()
    branch, _ = model.branch_losses([x1, x2], out)
    branch.backward()
    clean = sum(float(z.grad.abs().sum()) for z in out["z"] if z.grad is not None)
    assert (clean == 0) == stop
    encoder = sum(float(p.grad.abs().sum()) for p in model.backbone.parameters()
                  if p.grad is not None)
    assert encoder > 0  # the mixed crop's own path trains either way


@pytest.mark.parametrize("method, value, message", [
    ("simclr", "batch", "unknown key 'method_kwargs.mix_candidates'"),
    ("mixmask_simclr", "all", "mix_candidates='all': choose one of"),
    ("simclr", True, "unknown key 'method_kwargs.mix_stop_gradient'"),
])
def test_mixture_keys_belong_to_simclrs_mixmask_variant(method, value, message, cifar_train,
                                                           tmp_path):
    cfg = tiny_cfg(method, cifar_train, tmp_path)
    key = "mix_stop_gradient" if isinstance(value, bool) else "mix_candidates"
    cfg.method_kwargs[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_pretrain_cfg(cfg)


def test_targets_both_needs_a_symmetric_base_loss(cifar_train, tmp_path):
    cfg = tiny_cfg("mixmask_mocov2plus", cifar_train, tmp_path)
    cfg.method_kwargs.update({"symmetric": False, **BRANCHES["mixmask"]})
    with pytest.raises(ConfigError, match="targets='both' needs a symmetric base loss"):
        parse_pretrain_cfg(cfg)


def test_shared_queue_takes_two_batches_of_keys_a_step(cifar_train, tmp_path):
    cfg = tiny_cfg("mocov2plus", cifar_train, tmp_path, method_kwargs__shared_queue=True,
                   method_kwargs__queue_size=96)  # a multiple of 32, not of 2 x 32
    with pytest.raises(ConfigError, match="multiple of the keys enqueued per step, 64"):
        parse_pretrain_cfg(cfg)


def test_sum_is_twice_the_mean(cifar_train, tmp_path):
    losses = {}
    for reduction in ("mean", "sum"):
        cfg = parse_pretrain_cfg(tiny_cfg("mocov2plus", cifar_train, tmp_path,
                                          method_kwargs__symmetric_loss=reduction,
                                          method_kwargs__shuffle_bn=False))
        torch.manual_seed(0)
        model = METHODS["mocov2plus"](cfg)
        spec = LoaderSpec.from_config(cfg, False)
        _, crops, _ = next(iter(build_pretrain_loader(spec, build_pretrain_dataset(spec))))
        losses[reduction] = float(model.ssl_forward(crops)["loss"])
    assert losses["sum"] == pytest.approx(2 * losses["mean"], rel=1e-5)


# ------------------------------------------------------------------------ evaluation per method
def short_run(config: str, folder: str, data: Path, tmp_path: Path):
    from solo_mixmask.engine.pretrain import pretrain

    cfg = load_config(str(REPO / "scripts/pretrain/paper" / folder), config, [
        f"data.train_path={data}", "data.val_path=null", "data.dataset=cifar10",
        "data.num_workers=0", "optimizer.batch_size=16", "max_epochs=1", "limit_train_batches=2",
        "knn_eval.enabled=false", f"checkpoint.dir={tmp_path}", "enable_progress_bar=false",
        "backbone.kwargs.width=0.25"])
    return pretrain(cfg, trainer_kwargs={"logger": False}).checkpoint


def test_knn_on_the_moco_head_output(cifar_train, cifar_test, tmp_path, capsys):
    """``knn --feature projector`` compares the 128-d head outputs of the query encoder."""
    from solo_mixmask.cli import main
    from solo_mixmask.data.augmentations import build_eval_transform
    from solo_mixmask.eval.checkpoints import load_method
    from solo_mixmask.eval.features import eval_loader, extract_features, image_dataset
    from solo_mixmask.eval.knn import knn_accuracy

    ckpt = short_run("mocov2plus.yaml", "cifar100", cifar_train, tmp_path)
    results = tmp_path / "results"
    assert main(["knn", str(ckpt), "--train-path", str(cifar_train), "--val-path",
                 str(cifar_test), "--feature", "projector", "--num-workers", "0",
                 "--results-dir", str(results)]) == 0
    (record,) = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert record["settings"]["feature"] == "projector"
    encoder = load_method(ckpt).knn_encoder("projector")
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the run's own statistics
    tf = build_eval_transform(32, mean, std)
    banks = [extract_features(encoder, eval_loader(image_dataset(eval_data(), p, tf, True), 64, 0))
             for p in (cifar_train, cifar_test)]
    assert banks[0][0].shape[1] == 128
    top1, top5 = knn_accuracy(*banks[0], *banks[1], 10, k=200, T=0.1, distance="cosine")
    assert record["metrics"]["acc1"] == pytest.approx(top1, abs=0.01)


def test_wmse_linear_probe_on_a_paper_simclr_run(cifar_train, cifar_test, tmp_path, capsys):
    """The W-MSE probe of scripts/linear/paper: Adam on precomputed features, recorded as such."""
    from solo_mixmask.cli import main

    ckpt = short_run("simclr.yaml", "cifar100", cifar_train, tmp_path)
    results = tmp_path / "results"
    assert main(["linear", "--config-path", str(REPO / "scripts/linear/paper/cifar100"),
                 "--config-name", "simclr.yaml", f"pretrained_feature_extractor={ckpt}",
                 "data.dataset=cifar10", f"data.train_path={cifar_train}",
                 f"data.val_path={cifar_test}", "data.num_workers=0", "max_epochs=300",
                 f"results_dir={results}", f"checkpoint.dir={tmp_path / 'linear'}"]) == 0, \
        capsys.readouterr().err
    (record,) = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert record["settings"]["protocol"] == "wmse-probe"
    assert record["settings"]["optimizer"] == "adam" and record["settings"]["batch_size"] == 1000
    assert record["metrics"]["acc1"] > 15.0  # 10 classes: chance is 10
