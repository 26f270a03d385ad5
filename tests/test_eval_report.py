"""Variants of pretraining runs, result records and the report's table and log merging."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import REPO, tiny_cfg
from solo_mixmask.cli import main
from solo_mixmask.config import load_config
from solo_mixmask.engine.pretrain import parse_pretrain_cfg
from solo_mixmask.errors import DataError
from solo_mixmask.eval.records import SCHEMA, load_records, variant_of, write_record
from solo_mixmask.eval.report import (
    Run,
    build_report,
    colour_key,
    curve_panels,
    epoch_metrics,
    markdown_table,
    records_table,
    run_group,
)

CIFAR = REPO / "scripts/pretrain/cifar"


@pytest.mark.parametrize("name,variant", [
    ("mocov2plus", "vanilla"), ("mocov2plus_unmix", "unmix"), ("mocov2plus_mixmask", "mixmask"),
    ("mocov2plus_mixmask_star", "mixmask_star"), ("mocov2plus_erase", "erase"),
    ("byol_mixmask_star", "mixmask_star"), ("simsiam_erase", "erase"), ("simclr_unmix", "unmix"),
])
def test_variant_of_the_shipped_configs(name, variant, tmp_path):
    """Both the composed config and the parsed one (what args.json holds) give the variant."""
    cfg = load_config(str(CIFAR), f"{name}.yaml")
    assert variant_of(OmegaConf.to_container(cfg)) == variant
    cfg.data.train_path = str(tmp_path)
    parsed = parse_pretrain_cfg(cfg)
    assert variant_of(OmegaConf.to_container(parsed, resolve=True)) == variant


def test_variant_defaults_of_mixmask_methods(tmp_path):
    """A bare ``mixmask_<method>`` runs the MixMask branch with mix filling."""
    cfg = tiny_cfg("mixmask_byol", tmp_path, tmp_path)
    assert variant_of(OmegaConf.to_container(cfg)) == "mixmask"
    parsed = parse_pretrain_cfg(cfg)
    assert parsed.method_kwargs.mixmask.enabled and parsed.method_kwargs.mixmask.fill == "mix"


def record(variant: str, acc1: float, method="mocov2plus", dataset="cifar100", epochs=1000,
           eval_kind="knn", **settings) -> dict:
    return {"schema": SCHEMA, "eval": eval_kind, "method": method, "variant": variant,
            "dataset": dataset, "epochs": epochs, "metrics": {"acc1": acc1, "acc5": acc1 + 20},
            "settings": {"k": 200, "temperature": 0.1, "distance": "cosine", **settings}}


def test_table_has_the_shape_of_table_5():
    records = [record("vanilla", 60.0), record("unmix", 61.0), record("mixmask", 62.5),
               record("mixmask_star", 62.0), record("mixmask", 63.5),
               record("vanilla", 50.0, "byol", "tiny-imagenet", 400)]
    lines = markdown_table(records).splitlines()
    assert lines[0] == ("| Variant | MoCo v2 / CIFAR-100 (1000 ep) | "
                        "BYOL / Tiny-ImageNet (400 ep) |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "Vanilla", "Un-Mix", "MixMask", "MixMask*"]
    assert lines[4] == "| MixMask | **63.00 (62.50–63.50, n=2)** | – |"  # two seeds, the best
    assert lines[2] == "| Vanilla | 60.00 | 50.00 |"  # alone in its column: not bold
    with_erase = markdown_table(records + [record("erase", 59.0)]).splitlines()
    assert with_erase[-1] == "| Erase-based | 59.00 | – |"


def test_records_round_trip_and_protocols_stay_apart(tmp_path):
    write_record(record("vanilla", 60.0), tmp_path)
    write_record(record("vanilla", 70.0, eval_kind="linear", protocol="frozen"), tmp_path)
    (tmp_path / "more.jsonl").write_text(json.dumps(record("mixmask", 61.0)) + "\n")
    (tmp_path / "args.json").write_text(json.dumps({"method": "byol"}))  # not a record
    assert sorted(r["metrics"]["acc1"] for r in load_records(tmp_path)) == [60.0, 61.0, 70.0]
    report = build_report(tmp_path, plot=False)
    assert report.records == 3 and report.figure_path is None
    knn = report.markdown.split("### KNN (k=200, T=0.1, cosine), top-1 (%)")[1].split("###")[0]
    linear = report.markdown.split("### Linear (frozen), top-1 (%)")[1]
    assert "61.00" in knn and "70.00" not in knn and "70.00" in linear


def test_broken_records_are_named(tmp_path, capsys):
    bad = record("vanilla", 1.0)
    del bad["metrics"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="bad.json lacks metrics"):
        load_records(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: results directory not found")


def write_log(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["epoch", "step", "train_loss_epoch", "val_knn_acc1"]
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_resumed_sessions_merge_epoch_by_epoch(tmp_path):
    """version_10 sorts after version_9; a repeated epoch takes the later session's value."""
    run = tmp_path / "run"
    (run / "args.json").parent.mkdir()
    (run / "args.json").write_text(json.dumps({"method": "mixmask_mocov2plus"}))
    write_log(run / "logs/version_9/metrics.csv", [
        {"epoch": 0, "step": 9, "train_loss_epoch": 5.0},
        {"epoch": 0, "step": 9, "val_knn_acc1": 20.0},
        {"epoch": 1, "step": 19, "train_loss_epoch": 4.0, "val_knn_acc1": 25.0}])
    write_log(run / "logs/version_10/metrics.csv", [
        {"epoch": 1, "step": 19, "train_loss_epoch": 3.9, "val_knn_acc1": 26.0},
        {"epoch": 2, "step": 29, "train_loss_epoch": 3.5}])
    curves = epoch_metrics(run)
    assert curves["train_loss_epoch"] == {0: 5.0, 1: 3.9, 2: 3.5}
    assert curves["val_knn_acc1"] == {0: 20.0, 1: 26.0}
    report = build_report(tmp_path, out_dir=tmp_path / "out")  # no records, only the logs
    assert report.runs == 1 and report.figure_path.is_file()
    assert "MoCo v2 MixMask" in report.markdown


def test_runs_that_differ_by_seed_share_a_colour(tmp_path):
    names = ["mocov2plus-mixmask-50ep-s0", "mocov2plus-mixmask-50ep-s1",
             "mocov2plus-vanilla-50ep-s0", "mocov2plus-mixmask-grid4-50ep-s0", "byol_seed12"]
    groups = [run_group(Run(tmp_path / n, n)) for n in names]
    assert groups[0] == groups[1]
    assert len({groups[0], groups[2], groups[3]}) == 3
    assert groups[4] == "byol"


def test_curves_have_a_row_per_method_and_a_colour_per_variant_across_rows(tmp_path):
    named = [("byol-mixmask-50ep-s0", "byol"), ("mocov2plus-vanilla-50ep-s0", "mocov2plus"),
             ("mocov2plus-mixmask-50ep-s0", "mocov2plus"), ("mocov2plus-mixmask-50ep-s1",
                                                            "mocov2plus")]
    runs = [Run(tmp_path / n, n, method=m) for n, m in named]
    rows, colour_of = curve_panels(runs)
    assert list(rows) == ["mocov2plus", "byol"]  # the tables' method order
    assert sorted(len(members) for members in rows["mocov2plus"].values()) == [1, 2]
    keys = [colour_key(r) for r in runs]
    assert keys[0] == keys[2] == keys[3] != keys[1]
    assert colour_of[keys[0]] != colour_of[keys[1]]


def test_every_variant_group_gets_its_own_colour(tmp_path):
    """The CPU reproduction's nine groups (five variants, other budgets, grid and ratio
    ablations) all get distinct colours; vanilla and MixMask keep the paper's blue and red."""
    from solo_mixmask.eval.report import PALETTE, VARIANT_COLOURS

    groups = ["vanilla-50ep", "mixmask-50ep", "unmix-50ep", "mixmask_star-50ep", "erase-50ep",
              "vanilla-100ep", "mixmask-100ep", "mixmask-grid4-50ep", "mixmask-ratio-uniform-50ep"]
    runs = [Run(tmp_path / f"mocov2plus-{g}-s{s}", g, method="mocov2plus")
            for g in groups for s in range(2 if g.endswith("-50ep") else 1)]
    _, colour_of = curve_panels(runs)
    colours = [PALETTE[colour_of[g]] for g in groups]
    assert len(set(colours)) == len(groups)
    assert colour_of["vanilla-50ep"] == VARIANT_COLOURS["vanilla"]
    assert colour_of["mixmask-50ep"] == VARIANT_COLOURS["mixmask"]
    assert colour_of["erase-50ep"] != colour_of["vanilla-50ep"]


def test_records_table_lists_every_run_with_its_provenance():
    machine = "box: 2 cores, no GPU"
    records = [record("mixmask", 62.5, seed=1, wall_time_s=600, commit="abc1234", machine=machine),
               record("vanilla", 60.0, seed=0, wall_time_s=300, commit="abc1234", machine=machine),
               record("mixmask", 63.5, seed=0, device="NVIDIA H200")]
    lines = records_table(records).splitlines()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:5]]
    assert [(r[2], r[3], r[4], r[6]) for r in rows] == [
        ("Vanilla", "0", "60.00", "5.0"), ("MixMask", "0", "63.50", "–"),
        ("MixMask", "1", "62.50", "10.0")]
    assert lines[-2:] == [f"Machine: {machine}", "Machine: NVIDIA H200"]


def test_epoch_columns_are_in_numeric_order():
    header = markdown_table([record("vanilla", 60.0, epochs=100),
                             record("vanilla", 50.0, epochs=50)]).splitlines()[0]
    assert header.index("(50 ep)") < header.index("(100 ep)")


def test_knn_protocols_with_another_vote_or_feature_get_their_own_table():
    from solo_mixmask.eval.report import table_key

    base = record("vanilla", 60.0)
    base["settings"].update(k=200, temperature=0.1, distance="cosine")
    majority = {**base, "settings": {**base["settings"], "k": 5, "distance": "euclidean",
                                     "vote": "majority"}}
    head = {**base, "settings": {**base["settings"], "feature": "projector"}}
    keys = {table_key(r) for r in (base, majority, head)}
    assert len(keys) == 3
    assert table_key(majority) == "KNN (k=5, euclidean, majority vote)"
    assert table_key(head) == "KNN (k=200, T=0.1, cosine, head output)"
