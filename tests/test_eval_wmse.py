"""The W-MSE evaluation protocol (github.com/htdt/self-supervised): majority-vote KNN and the
precomputed-feature linear probe, checked on real CIFAR-10 images against brute-force references.

Features: normalised pixels and the pooled features of a randomly initialised ResNet-18 (1/4 width,
CIFAR stem, fixed seed); there is no pretrained checkpoint offline, and a random network's features
of real images are real features for a correctness test.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import data_file
from solo_mixmask.backbones import create_backbone
from solo_mixmask.cli import main
from solo_mixmask.data.npz import load_npz, select_per_class
from solo_mixmask.errors import DataError
from solo_mixmask.eval.feature_probe import train_feature_probe, wmse_lr
from solo_mixmask.eval.knn import knn_accuracy, knn_scores

MEAN = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
STD = torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
C = 10


def _images(split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of each class of the packed CIFAR-10 split, normalised."""
    z = load_npz(data_file(f"cifar10-jpeg/{split}.npz"))
    jpeg, off, labels = z["jpeg"], z["offsets"], z["labels"].astype(np.int64)
    idx = select_per_class(labels, per_class)
    pix = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[off[i]:off[i + 1]].tobytes()))
                               .convert("RGB")) for i in idx])
    x = torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD, torch.from_numpy(labels[idx])


@pytest.fixture(scope="module")
def cifar() -> dict[str, torch.Tensor]:
    """2000 train / 1000 test real CIFAR-10 images: pixel and random-ResNet features."""
    x_tr, y_tr = _images("train", 200)
    x_te, y_te = _images("test", 100)
    torch.manual_seed(0)
    net = create_backbone("resnet18", cifar_stem=True, width=0.25).eval()
    with torch.no_grad():
        f_tr = torch.cat([net(b) for b in x_tr.split(250)])
        f_te = torch.cat([net(b) for b in x_te.split(250)])
    return {"pix_tr": x_tr.flatten(1), "pix_te": x_te.flatten(1), "res_tr": f_tr, "res_te": f_te,
            "y_tr": y_tr, "y_te": y_te}


# ---------------------------------------------------------------------------------- brute force
_DIST: dict[tuple[str, str], torch.Tensor] = {}


def _distances(cifar: dict[str, torch.Tensor], feats: str, distance: str) -> torch.Tensor:
    """The full float64 test x train distance matrix (cosine: 1 - similarity), no chunking."""
    if (feats, distance) not in _DIST:
        tr, te = cifar[f"{feats}_tr"].double(), cifar[f"{feats}_te"].double()
        if distance == "cosine":
            norm = torch.nn.functional.normalize
            _DIST[feats, distance] = 1 - norm(te, dim=1) @ norm(tr, dim=1).T
        else:
            _DIST[feats, distance] = torch.cdist(te, tr)
    return _DIST[feats, distance]


def _neighbours(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest train indices, and whether the set is unambiguous in float32: the k-th and
    (k+1)-th distances differ by more than float32 error (at most 6e-5 relative measured on these
    features: ``cdist``'s matmul form cancels), else either neighbour is a right answer."""
    s, idx = d.topk(k + 1, dim=1, largest=False)
    clear = (s[:, k] - s[:, k - 1]) > 1e-4 * s[:, k].abs().clamp_min(1.0)
    return idx[:, :k], clear


def _vote_counts(labels: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.bincount(row, minlength=C) for row in labels]).float()


# ------------------------------------------------------------------------------------------ KNN
#: random-ResNet features are nearly collinear (cosine similarities 0.93-1.0), so their cosine ranks
#: are float32 noise; cosine is checked on pixels only
SPACES = [("pix", "euclidean"), ("res", "euclidean"), ("pix", "cosine")]


@pytest.mark.data
@pytest.mark.parametrize("feats,distance", SPACES)
@pytest.mark.parametrize("k", [5, pytest.param(20, marks=pytest.mark.long)])
def test_majority_knn_equals_brute_force(cifar, feats, distance, k):
    tr, te, y_tr, y_te = cifar[f"{feats}_tr"], cifar[f"{feats}_te"], cifar["y_tr"], cifar["y_te"]
    idx, clear = _neighbours(_distances(cifar, feats, distance), k)
    assert clear.float().mean() > 0.9  # measured 95-99%
    counts = _vote_counts(y_tr[idx])
    pred = counts.argmax(1)  # first maximum: the smaller class wins a tie, as in W-MSE
    assert (counts == counts.max(1, keepdim=True).values).sum(1).gt(1).sum() > 20, \
        "the data should exercise tie-breaking"
    key = counts * C + (C - 1 - torch.arange(C))  # count first, then the smaller class
    top5 = key.topk(5, dim=1).indices
    hit5 = ((top5 == y_te[:, None]) & (counts.gather(1, top5) > 0)).any(1)
    want = ((pred == y_te)[clear].double().mean().item() * 100,
            hit5[clear].double().mean().item() * 100)

    for chunks in ({}, {"test_chunk": 97, "train_chunk": 301}, {"test_chunk": 1000,
                                                                 "train_chunk": 2 * k + 1}):
        got = knn_scores(tr, y_tr, te, C, k=k, distance=distance, vote="majority", **chunks)
        assert torch.equal(got[clear], counts[clear]), chunks
        acc = knn_accuracy(tr, y_tr, te[clear], y_te[clear], C, k=k, distance=distance,
                           vote="majority", **chunks)
        assert acc == pytest.approx(want, abs=1e-4), chunks


def test_majority_tie_breaks_to_the_smaller_class_and_ignores_zero_votes():
    # neighbours of the query at 0: labels 7, 3, 3, 1, 1 (distances 1..5) -> counts 3:2, 1:2, 7:1
    train = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [50.0]])
    labels = torch.tensor([7, 3, 3, 1, 1, 4])
    scores = knn_scores(train, labels, torch.zeros(1, 1), 9, k=5, distance="euclidean",
                        vote="majority")
    assert scores[0].tolist() == [0, 2, 0, 2, 0, 0, 0, 1, 0]
    for truth, want in ((1, (100.0, 100.0)), (3, (0.0, 100.0)), (7, (0.0, 100.0)),
                        (0, (0.0, 0.0)), (4, (0.0, 0.0))):  # 0 and 4 get no vote: no top-5 hit
        got = knn_accuracy(train, labels, torch.zeros(1, 1), torch.tensor([truth]), 9, k=5,
                           distance="euclidean", vote="majority")
        assert got == pytest.approx(want), truth


@pytest.mark.data
@pytest.mark.parametrize("feats,distance", SPACES)
def test_weighted_default_unchanged(cifar, feats, distance):
    tr, te, y_tr, y_te = cifar[f"{feats}_tr"], cifar[f"{feats}_te"], cifar["y_tr"], cifar["y_te"]
    k, T = 200, 0.1
    d = _distances(cifar, feats, distance)
    idx, clear = _neighbours(d, k)
    assert clear.float().mean() > 0.75  # the 200th neighbours are dense: 81-90% measured
    w = ((1 - d.gather(1, idx)) / T).exp() if distance == "cosine" else 1 / (d.gather(1, idx) + 1e-5)
    want = torch.zeros(len(te), C, dtype=torch.float64).scatter_add_(1, y_tr[idx], w)
    default = knn_scores(tr, y_tr, te, C, k, T, distance, 97, 301)
    assert torch.equal(default, knn_scores(tr, y_tr, te, C, k, T, distance, 97, 301,
                                           vote="weighted"))
    torch.testing.assert_close(default[clear].double(), want[clear], rtol=1e-4, atol=0)
    top1 = (want.argmax(1) == y_te)[clear].double().mean().item() * 100
    acc = knn_accuracy(tr, y_tr, te[clear], y_te[clear], C, k, T, distance, test_chunk=97,
                       train_chunk=301)
    assert acc[0] == pytest.approx(top1, abs=1e-4)
    assert knn_accuracy(tr, y_tr, te, y_te, C, k, T, distance) == \
        knn_accuracy(tr, y_tr, te, y_te, C, k, T, distance, vote="weighted")


def test_unknown_vote_is_refused():
    with pytest.raises(ValueError, match="unknown KNN vote"):
        knn_scores(torch.randn(8, 4), torch.zeros(8, dtype=torch.long), torch.randn(2, 4), 2,
                   vote="mode")


# ---------------------------------------------------------------------------------------- probe
def test_wmse_schedule_reaches_lr_end_like_exponential_lr():
    epochs, lr, lr_end = 500, 1e-2, 1e-6
    assert wmse_lr(0, epochs, lr, lr_end) == lr
    assert wmse_lr(epochs, epochs, lr, lr_end) == pytest.approx(lr_end, rel=1e-12)
    # W-MSE: ExponentialLR(gamma = (lr_end / lr) ** (1 / epochs)), one step per epoch
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(lr_end / lr) ** (1 / epochs))
    for epoch in range(epochs + 1):
        assert wmse_lr(epoch, epochs, lr, lr_end) == pytest.approx(opt.param_groups[0]["lr"],
                                                                   rel=1e-9)
        opt.step()
        sched.step()
    gamma = (lr_end / lr) ** (1 / epochs)
    assert wmse_lr(epochs - 1, epochs, lr, lr_end) == pytest.approx(lr_end / gamma, rel=1e-12)


@pytest.mark.data
def test_probe_follows_the_schedule_and_is_deterministic(cifar):
    tr, te, y_tr, y_te = cifar["res_tr"], cifar["res_te"], cifar["y_tr"], cifar["y_te"]
    kw = {"epochs": 12, "lr": 1e-2, "lr_end": 1e-4, "batch_size": 300, "eval_every": 1}
    a = train_feature_probe(tr, y_tr, te, y_te, C, seed=3, **kw)
    assert [h["epoch"] for h in a["history"]] == list(range(1, 13))
    assert [h["lr"] for h in a["history"]] == [wmse_lr(e, 12, 1e-2, 1e-4) for e in range(12)]
    assert a["history"][-1]["loss"] < a["history"][0]["loss"]
    assert (a["acc1"], a["acc5"], a["loss"]) == tuple(a["history"][-1][m]
                                                      for m in ("acc1", "acc5", "loss"))
    b = train_feature_probe(tr, y_tr, te, y_te, C, seed=3, **kw)
    assert torch.equal(a["classifier"].weight, b["classifier"].weight)
    assert a["history"] == b["history"]
    c = train_feature_probe(tr, y_tr, te, y_te, C, seed=4, **kw)
    assert not torch.equal(a["classifier"].weight, c["classifier"].weight)


@pytest.mark.data
def test_probe_learns_real_features_like_logistic_regression(cifar):
    """W-MSE's full default run (500 epochs, batch 1000) on random-ResNet features of 2000 real
    images. Measured: probe 27.4-27.5% top-1 (75.6% top-5; seeds 1, 2: 26.4%, 26.5%), scikit-learn's
    logistic regression 29.2%, majority KNN (k=5, euclidean) 19.9-20.0%, chance 10%; the probe on
    shuffled labels (100 epochs): 10.6-12.4%."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    tr, te, y_tr, y_te = cifar["res_tr"], cifar["res_te"], cifar["y_tr"], cifar["y_te"]
    res = train_feature_probe(tr, y_tr, te, y_te, C)
    with threadpool_limits(1):  # BLAS threads fighting torch's spinning OpenMP ones: 30x slower
        ref = LogisticRegression(max_iter=1000).fit(tr.numpy(), y_tr.numpy())
    ref_acc = (ref.predict(te.numpy()) == y_te.numpy()).mean() * 100
    knn1, _ = knn_accuracy(tr, y_tr, te, y_te, C, k=5, distance="euclidean", vote="majority")
    assert res["acc1"] > 22 and res["acc5"] > 65
    assert res["acc1"] > ref_acc - 4, (res["acc1"], ref_acc)
    assert res["acc1"] > knn1 + 4, (res["acc1"], knn1)
    # the same thresholds fail without signal: labels shuffled
    shuffled = y_tr[torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(1))]
    control = train_feature_probe(tr, shuffled, te, y_te, C, epochs=100)
    assert control["acc1"] < 17


def test_probe_rejects_bad_input():
    x, y = torch.randn(20, 4), torch.arange(20) % 3
    with pytest.raises(DataError, match="4-d, test features 5-d"):
        train_feature_probe(x, y, torch.randn(5, 5), y[:5], 3, epochs=1)
    with pytest.raises(DataError, match="labels outside 0..2"):
        train_feature_probe(x, y, x, y + 1, 3, epochs=1)
    with pytest.raises(DataError, match="no training features"):
        train_feature_probe(torch.empty(0, 4), y[:0], x, y, 3, epochs=1)
    with pytest.raises(ValueError, match="lr_end"):
        train_feature_probe(x, y, x, y, 3, epochs=1, lr_end=0)
    res = train_feature_probe(x, y, x, y, epochs=2, batch_size=7)  # classes from the labels
    assert res["classifier"].out_features == 3


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.data
def test_knn_cli_majority_vote(tmp_path, cifar_train, cifar_test, capsys):
    torch.manual_seed(0)
    net = create_backbone("resnet18", cifar_stem=True, width=0.25)
    ckpt = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), ckpt)
    rc = main(["knn", str(ckpt), "--train-path", str(cifar_train), "--val-path", str(cifar_test),
               "--dataset", "cifar10", "--num-workers", "0", "--vote", "majority",
               "--distance", "euclidean", "--results-dir", str(tmp_path / "results"),
               "--test-chunk", "64", "--train-chunk", "128"])
    assert rc == 0
    assert "majority vote, euclidean, k=5" in capsys.readouterr().out
    (record_path,) = (tmp_path / "results").rglob("*.json")
    record = json.loads(record_path.read_text())
    assert record["settings"]["vote"] == "majority" and record["settings"]["k"] == 5
    assert "--vote majority" in record["command"] and "--k 5" in record["command"]
