"""``show-masks`` draws masks and mixtures of real images."""

from __future__ import annotations

from PIL import Image

from conftest import data_file
from solo_mixmask.cli import main


def test_show_masks_writes_a_png_of_real_images(tmp_path, capsys):
    npz = data_file("imagenette2-224px/train_200pc.npz")
    out = tmp_path / "masks.png"
    code = main(["show-masks", "--images", str(npz), "--index", "0", "1500", "--size", "96",
                 "--grids", "2", "8", "--out", str(out)])
    assert code == 0 and out.is_file()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300
    assert "wrote" in capsys.readouterr().out


def test_show_masks_rejects_an_index_outside_the_data(tmp_path, capsys):
    npz = data_file("imagenette2-224px/train_200pc.npz")
    code = main(["show-masks", "--images", str(npz), "--index", "0", "99999",
                 "--out", str(tmp_path / "x.png")])
    assert code == 2 and "out of range" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
