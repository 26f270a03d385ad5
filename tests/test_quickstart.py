"""The README's first command: the quickstart trains on bundled real digits and reports KNN; its
full default run is a long test (``-m long``)."""

from __future__ import annotations

import re

import pytest

from solo_mixmask.cli import main


@pytest.mark.long
def test_quickstart_default_beats_the_untrained_backbone(tmp_path, capsys):
    """The README's first command as it ships: 30 epochs (about a minute on two cores, so outside
    the default run)."""
    code = main(["quickstart", "--out", str(tmp_path), "+enable_progress_bar=false"])
    out = capsys.readouterr().out
    assert code == 0
    untrained = float(re.search(r"untrained backbone:\s+([\d.]+)%", out).group(1))
    trained = float(re.search(r"after 30 epochs of mixmask_simclr:\s+([\d.]+)%", out).group(1))
    assert trained > untrained + 1.0
    assert list((tmp_path / "trained_models" / "mixmask_simclr").glob("*/*-ep=29.ckpt"))
    assert len(list((tmp_path / "digits-16px" / "train").rglob("*.png"))) > 1000


def test_quickstart_takes_overrides(tmp_path, capsys):
    code = main(["quickstart", "--out", str(tmp_path), "--epochs", "1", "--method", "simsiam",
                 "method_kwargs.pred_hidden_dim=32", "optimizer.lr=0.05", "limit_train_batches=2",
                 "+enable_progress_bar=false"])
    assert code == 0
    assert "after 1 epochs of simsiam" in capsys.readouterr().out


def test_quickstart_writes_under_the_cache_folder_and_says_where(tmp_path, monkeypatch, capsys):
    """Without --out nothing lands in the current folder; --method swaps the method's heads."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code = main(["quickstart", "--epochs", "1", "--method", "mocov2plus", "limit_train_batches=2",
                 "enable_progress_bar=false"])
    out = capsys.readouterr().out
    assert code == 0
    where = tmp_path / "cache" / "solo-mixmask" / "quickstart"
    assert f"quickstart folder: {where}" in out and "after 1 epochs of mocov2plus" in out
    assert list((where / "trained_models" / "mocov2plus").glob("*/*-ep=0.ckpt"))
    assert list(cwd.iterdir()) == []
