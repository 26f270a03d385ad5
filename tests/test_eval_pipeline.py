"""End to end on real CIFAR-10 images: pretrain SimCLR briefly (in two sessions, the second
resumed), then run the ``knn``, ``linear``, ``semi`` and ``report`` commands on the checkpoint.

Everything shares one pretraining run (``pretrained`` in conftest.py). Torch runs on one thread
here: on a busy 2-core machine two threads per process mostly wait on each other.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import EPOCHS, REPO
from solo_mixmask.cli import main
from solo_mixmask.eval.checkpoints import load_checkpoint_file, split_backbone
from solo_mixmask.eval.records import SCHEMA, load_records

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The evaluations on one thread, as the shared pretraining run (conftest.py) trained."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _records(folder: Path, eval_kind: str, protocol: str | None = None) -> list[dict]:
    return [r for r in load_records(folder) if r["eval"] == eval_kind
            and (protocol is None or r["settings"].get("protocol") == protocol)]


def _only_record(folder: Path, eval_kind: str, protocol: str | None = None, **match) -> dict:
    found = [r for r in _records(folder, eval_kind, protocol)
             if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def _knn(ckpt: Path, train: Path, test: Path, results: Path, *extra: str) -> int:
    return main(["knn", str(ckpt), "--train-path", str(train), "--val-path", str(test),
                 "--num-workers", "0", "--batch-size", "128", "--results-dir", str(results),
                 *extra])


@pytest.fixture(scope="module")
def knn_records(pretrained, cifar_train, cifar_test):
    results = pretrained.results
    assert _knn(pretrained.checkpoint, cifar_train, cifar_test, results) == 0
    assert _knn(pretrained.untrained, cifar_train, cifar_test, results, "--dataset", "cifar10",
                "--method", "simclr", "--variant", "vanilla", "--epochs", "0") == 0
    return (_only_record(results, "knn", epochs=EPOCHS), _only_record(results, "knn", epochs=0))


def test_knn_of_trained_backbone_beats_untrained(knn_records, pretrained):
    """Same bank (500 train images), same 200 test images, same initial weights."""
    trained, untrained = knn_records
    assert untrained["checkpoint_format"] == "torchvision"
    before, after = untrained["metrics"], trained["metrics"]
    # top-1 on 200 images after 10 epochs of a 1/8-width network moves by several points with
    # float rounding alone (19.5 to 25.5 between two thread settings); top-5 is the steady signal
    assert after["acc1"] >= before["acc1"], (after, before)
    assert after["acc5"] > before["acc5"] + 4.0, (after, before)


def test_knn_record_describes_the_checkpoint(knn_records, pretrained):
    trained, _ = knn_records
    assert trained["schema"] == SCHEMA
    assert (trained["method"], trained["variant"], trained["dataset"]) == (
        "simclr", "vanilla", "cifar10")
    assert trained["backbone"] == "resnet18" and trained["epochs"] == EPOCHS
    assert trained["checkpoint_format"] == "solo_mixmask"
    digest = hashlib.sha256(Path(pretrained.checkpoint).read_bytes()).hexdigest()
    assert trained["checkpoint_sha256"] == digest
    assert Path(trained["run_dir"]) == Path(pretrained.run_dir).resolve()
    assert trained["settings"]["k"] == 200 and trained["settings"]["temperature"] == 0.1
    assert trained["settings"]["num_train"] == 500 and trained["settings"]["num_val"] == 200
    # the same evaluation as the pretraining monitor's last one (same bank, k, T, crops), through
    # another code path: the checkpoint file rather than the module in memory
    final = json.loads((Path(pretrained.run_dir) / "final_metrics.json").read_text())
    assert trained["metrics"]["acc1"] == pytest.approx(final["val_knn_acc1"], abs=0.01)
    assert trained["metrics"]["acc5"] == pytest.approx(final["val_knn_acc5"], abs=0.01)
    assert trained["command"].startswith(f"solo-mixmask knn {pretrained.checkpoint} ")
    assert "--k 200 --temperature 0.1 --distance cosine" in trained["command"]


def _printed_accuracy(out: str) -> tuple[float, float]:
    match = re.search(r"top-1 ([\d.]+)%  top-5 ([\d.]+)%", out)
    assert match, out
    return float(match.group(1)), float(match.group(2))


def test_record_of_the_pretraining_monitor(knn_records, pretrained):
    """A reproduction can record the monitor's last KNN instead of re-running ``knn``."""
    from solo_mixmask.eval.records import record_from_run
    from solo_mixmask.eval.report import table_key

    trained, _ = knn_records
    monitor = record_from_run(pretrained.run_dir)
    for key in ("eval", "method", "variant", "dataset", "backbone", "epochs", "checkpoint",
                "checkpoint_sha256", "run_dir"):
        assert monitor[key] == trained[key], key
    assert monitor["metrics"] == trained["metrics"]
    assert table_key(monitor) == table_key(trained) == "KNN (k=200, T=0.1, cosine)"


def test_knn_euclidean_chunked_and_half_precision_bank(knn_records, pretrained, cifar_train,
                                                       cifar_test, capsys):
    """solo-learn's euclidean weighting in one block and in tiny blocks must agree exactly; a
    float16 bank must agree with the float32 one up to rounding."""
    args = [pretrained.checkpoint, cifar_train, cifar_test, pretrained.results, "--no-record"]
    capsys.readouterr()
    assert _knn(*args, "--distance", "euclidean", "--k", "20") == 0
    whole = _printed_accuracy(capsys.readouterr().out)
    assert _knn(*args, "--distance", "euclidean", "--k", "20", "--train-chunk", "64",
                "--test-chunk", "50") == 0
    assert _printed_accuracy(capsys.readouterr().out) == whole
    assert _knn(*args, "--bank-dtype", "float16", "--train-chunk", "100") == 0
    half = _printed_accuracy(capsys.readouterr().out)
    full = knn_records[0]["metrics"]
    assert half[0] == pytest.approx(full["acc1"], abs=1.0)
    assert half[1] == pytest.approx(full["acc5"], abs=1.0)


def _linear_overrides(pretrained, train: Path, test: Path, out: Path, **extra) -> list[str]:
    values = {"pretrained_feature_extractor": pretrained.checkpoint, "data.dataset": "cifar10",
              "data.train_path": train, "data.val_path": test, "data.num_workers": 0,
              "accelerator": "cpu", "devices": 1, "precision": 32, "max_epochs": 2,
              "optimizer.batch_size": 64, "optimizer.lr": 0.4, "checkpoint.dir": out / "runs",
              "results_dir": pretrained.results, "+enable_progress_bar": False,
              "+enable_model_summary": False, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def _backbone_weights(path: Path) -> dict[str, torch.Tensor]:
    return split_backbone(load_checkpoint_file(path))[0]


def _val_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "logs/version_0/metrics.csv", newline="") as f:
        return sorted(int(row["epoch"]) for row in csv.DictReader(f) if row["val_acc1"])


def test_linear_keeps_the_backbone_frozen(pretrained, cifar_train, cifar_test, tmp_path):
    rc = main(["linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
               "simclr.yaml", *_linear_overrides(pretrained, cifar_train, cifar_test, tmp_path)])
    assert rc == 0
    record = _only_record(pretrained.results, "linear", "frozen")
    assert record["settings"]["max_epochs"] == 2 and record["settings"]["num_train"] == 500
    assert (record["method"], record["variant"], record["epochs"]) == ("simclr", "vanilla", EPOCHS)
    assert 0 <= record["metrics"]["acc1"] <= record["metrics"]["acc5"] <= 100
    run_dir = Path(record["eval_run_dir"])
    assert _val_epochs(run_dir) == [0, 1]
    # the classifier's checkpoint carries the backbone unchanged, BatchNorm statistics included
    (ckpt,) = run_dir.glob("*.ckpt")
    before, after = _backbone_weights(pretrained.checkpoint), _backbone_weights(ckpt)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_a_probe_tested_only_at_its_end_ends_with_the_same_figure(pretrained, cifar_train,
                                                                cifar_test, tmp_path):
    """SimSiam's own probe tests once, after training, as its code does: the figure equals that of
    the same probe tested every epoch, and no epoch before the last is tested."""
    paper = REPO / "scripts/linear/paper/cifar100"
    figures = {}
    for every in (1, None):  # None: the shipped config's check_val_every_n_epoch
        out = tmp_path / f"every-{every}"
        extra = {"results_dir": out}
        if every is not None:
            extra["check_val_every_n_epoch"] = every
        rc = main(["linear", "--config-path", str(paper), "--config-name", "simsiam.yaml",
                   *_linear_overrides(pretrained, cifar_train, cifar_test, tmp_path / str(every),
                                      **extra)])
        assert rc == 0
        (record,) = _records(out, "linear")
        figures[every] = record["metrics"]
        if every is None:
            assert record["settings"]["max_epochs"] == 2
            assert 0 not in _val_epochs(Path(record["eval_run_dir"]))
    assert figures[1] == figures[None]


def test_linear_on_precomputed_features_learns(pretrained, cifar_train, cifar_test, tmp_path):
    """The fast path: 40 epochs on cached features; 10 classes, so chance is 10%."""
    extra = {"features.precompute": True, "max_epochs": 40, "optimizer.lr": 2.0,
             "scheduler.name": "cosine", "checkpoint.enabled": False}
    rc = main(["linear", "--config-path", str(REPO / "scripts/linear/cifar"), "--config-name",
               "simclr.yaml",
               *_linear_overrides(pretrained, cifar_train, cifar_test, tmp_path, **extra)])
    assert rc == 0
    record = _only_record(pretrained.results, "linear", "precomputed-features")
    assert record["metrics"]["acc1"] > 18.0, record["metrics"]


def test_semi_one_percent_subset(pretrained, cifar_train, cifar_test, tmp_path):
    rc = main(["semi", "--config-path", str(REPO / "scripts/semi/cifar"), "--config-name",
               "1pct.yaml", *_linear_overrides(pretrained, cifar_train, cifar_test, tmp_path)])
    assert rc == 0
    record = _only_record(pretrained.results, "semi", "frozen")
    assert record["settings"]["labels"] == "1%" and record["settings"]["num_train"] == 10
    listed = (Path(record["eval_run_dir"]) / "train_subset.txt").read_text().split()
    # 1% of 500 images over 10 classes: one image of every class, all from the training folder
    assert sorted(name.split("/")[0] for name in listed) == sorted(
        p.name for p in cifar_train.iterdir() if p.is_dir())
    chosen = {(cifar_train / name).resolve() for name in listed}
    assert all(p.is_file() for p in chosen)
    assert chosen.isdisjoint(p.resolve() for p in cifar_test.rglob("*.jpg"))

    # the same subset given as a file, fine-tuned for one epoch: the backbone must move
    subset = tmp_path / "subset.txt"
    subset.write_text("\n".join(listed) + "\n")
    extra = {"semi.subset_file": subset, "finetune": True, "max_epochs": 1,
             "optimizer.backbone_lr": 0.4}
    rc = main(["semi", "--config-path", str(REPO / "scripts/semi/cifar"), "--config-name",
               "1pct.yaml",
               *_linear_overrides(pretrained, cifar_train, cifar_test, tmp_path / "ft", **extra)])
    assert rc == 0
    tuned = _only_record(pretrained.results, "semi", "finetune")
    assert tuned["settings"]["subset_file"] == str(subset)
    tuned_dir = Path(tuned["eval_run_dir"])
    assert (tuned_dir / "train_subset.txt").read_text().split() == listed
    (ckpt,) = tuned_dir.glob("*.ckpt")
    before, after = _backbone_weights(pretrained.checkpoint), _backbone_weights(ckpt)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_report_tables_and_curves(knn_records, pretrained, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["report", str(pretrained.results), "--runs", str(pretrained.run_dir),
               "--out", str(out)])
    assert rc == 0
    markdown = (out / "report.md").read_text()
    assert "### KNN (k=200, T=0.1, cosine)" in capsys.readouterr().out
    trained, untrained = knn_records
    table = markdown.split("### KNN (k=200, T=0.1, cosine), top-1 (%)")[1].split("###")[0]
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0] == "| Variant | SimCLR / CIFAR-10 (0 ep) | SimCLR / CIFAR-10 (10 ep) |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "Vanilla", "Un-Mix", "MixMask", "MixMask*"]
    assert lines[2].split("|")[2:4] == [f" {untrained['metrics']['acc1']:.2f} ",
                                        f" {trained['metrics']['acc1']:.2f} "]
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100
    assert "curves.png" in markdown and str(pretrained.run_dir) in markdown


def test_resumed_run_logs_are_merged(pretrained):
    from solo_mixmask.eval.report import epoch_metrics, metrics_files

    assert [p.parent.name for p in metrics_files(pretrained.run_dir)] == ["version_0",
                                                                         "version_1"]
    curves = epoch_metrics(pretrained.run_dir)
    assert sorted(curves["train_loss_epoch"]) == list(range(EPOCHS))
    assert sorted(curves["val_knn_acc1"]) == list(range(1, EPOCHS, 2))
    final = json.loads((Path(pretrained.run_dir) / "final_metrics.json").read_text())
    assert curves["val_knn_acc1"][EPOCHS - 1] == pytest.approx(final["val_knn_acc1"], abs=1e-3)
