"""Every shipped pretraining config, as shipped, takes the same first step on real images as when the
golden table (tests/data/golden_first_steps.json) was written: the same config sections, the same
logged loss terms and lambda, the same weights after the step. A changed sign, weight, recipe value
or default fails here; ``python tests/golden.py`` rewrites the table after a deliberate change and
prints the diff to review (tests/golden.py says what the small form of each config is)."""

from __future__ import annotations

import golden
import pytest

CASES = golden.cases()
#: in the default run: every method once through the device path and the four branch variants
#: (nine cases); every shipped config's folder runs in the long run (``-m long``), which CI runs too
QUICK = ("device-format", "branch-variants")
FAMILIES = [f if f in QUICK else pytest.param(f, marks=pytest.mark.long)
            for f in sorted({c["family"] for c in CASES.values()})]


@pytest.fixture(scope="module")
def trees(cifar_train, tiny_imagenet_train, imagenette_train) -> dict:
    return {"cifar": cifar_train, "tiny": tiny_imagenet_train, "imagenette": imagenette_train}


def test_the_table_holds_every_case_and_nothing_else():
    assert list(golden.load_table()) == list(CASES)


def test_every_shipped_config_is_a_case():
    shipped = {str(p.relative_to(golden.PRETRAIN)) for p in golden.shipped_configs()}
    assert shipped <= set(CASES) and len(shipped) == 91


@pytest.mark.parametrize("family", FAMILIES)
def test_first_steps_match_the_golden_table(family, trees, tmp_path):
    ids = [c for c, case in CASES.items() if case["family"] == family]
    got = golden.compute(ids, trees, tmp_path)
    changes = golden.differences(golden.load_table(), got)
    assert not changes, "\n".join(changes[:40]) + "\n(python tests/golden.py rewrites the table)"
    for case_id in ids:  # what the table holds is a real step, not an empty record
        assert got[case_id]["metrics"]["train_loss"] == got[case_id]["metrics"]["train_loss"]
        assert "backbone" in got[case_id]["weights"]
