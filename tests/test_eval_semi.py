"""Labelled subsets for semi-supervised evaluation: class balance, seeds, subset files, and the
separation from the validation set, on the real image trees."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import eval_data
from solo_mixmask.data.datasets import scan_image_folder
from solo_mixmask.errors import ConfigError, DataError
from solo_mixmask.eval.features import image_dataset
from solo_mixmask.eval.semi import (
    balanced_subset,
    check_disjoint,
    labels_tag,
    match_subset,
    read_subset_file,
)

pytestmark = pytest.mark.data


def test_subset_is_class_balanced_and_seeded(cifar_train):
    targets = scan_image_folder(cifar_train).targets  # 50 images of each of 10 classes
    ten = balanced_subset(targets, 0.1, seed=0)
    assert Counter(targets[i] for i in ten) == {c: 5 for c in range(10)}
    assert len(set(ten.tolist())) == 50 and np.all(np.diff(ten) > 0)
    assert np.array_equal(ten, balanced_subset(targets, 0.1, seed=0))
    assert not np.array_equal(ten, balanced_subset(targets, 0.1, seed=1))
    one = balanced_subset(targets, 0.01, seed=0)  # 5 images over 10 classes: one of each
    assert Counter(targets[i] for i in one) == {c: 1 for c in range(10)}


def test_subset_of_one_class_ignores_the_others(cifar_train):
    """A class's pick depends on the seed and that class only, so dropping a class elsewhere does
    not reshuffle the rest."""
    targets = np.array(scan_image_folder(cifar_train).targets)
    full = balanced_subset(targets, 0.1, seed=3)
    keep = targets != 9
    reduced = np.flatnonzero(keep)[balanced_subset(targets[keep], 0.1, seed=3)]
    assert np.array_equal(full[targets[full] != 9], reduced)


def test_proportional_balance_on_unequal_classes(cifar_train):
    targets = list(scan_image_folder(cifar_train).targets)
    uneven = [t for i, t in enumerate(targets) if t != 0 or i % 5 == 0]  # class 0: 10 images
    picked = Counter(uneven[i] for i in balanced_subset(uneven, 0.2, 0, "proportional"))
    assert picked[0] == 2 and picked[1] == 10
    equal = Counter(uneven[i] for i in balanced_subset(uneven, 0.2, 0, "equal"))
    assert len(set(equal.values())) == 1


def test_bad_fraction_and_balance(cifar_train):
    targets = scan_image_folder(cifar_train).targets
    with pytest.raises(ConfigError, match="fraction"):
        balanced_subset(targets, 0.0)
    with pytest.raises(ConfigError, match="balance"):
        balanced_subset(targets, 0.1, balance="stratified")


def test_imagenet_style_subset_file(imagenette_train, tmp_path):
    """The standard 1%/10% lists name ImageNet files (n01440764_10026.JPEG), one per line."""
    images = scan_image_folder(imagenette_train)  # ImageNet files: n01440764/<name>.JPEG
    picked = [3, 17, 42, 99]
    names = [images.paths[i].rsplit("/", 1)[1] for i in picked]
    assert all(n.endswith(".JPEG") for n in names)
    listing = tmp_path / "subset.txt"
    listing.write_text("# comment\n" + "\n".join(names + [names[0], ""]) + "\n")
    assert read_subset_file(listing) == names
    assert match_subset(images.paths, imagenette_train, names).tolist() == picked


def test_subset_file_errors(cifar_train, tmp_path):
    images = scan_image_folder(cifar_train)
    rel = [p.replace(str(cifar_train) + "/", "") for p in images.paths[:3]]
    assert match_subset(images.paths, cifar_train, rel).tolist() == [0, 1, 2]
    base = rel[0].split("/")[1]  # CIFAR file names repeat across class folders
    with pytest.raises(DataError, match="matches 10 images"):
        match_subset(images.paths, cifar_train, [base])
    with pytest.raises(DataError, match="names 2 images that are not in"):
        match_subset(images.paths, cifar_train, rel + ["cat/missing.jpg", "n0_1.JPEG"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(DataError, match="lists no images"):
        read_subset_file(empty)
    with pytest.raises(DataError, match="not found"):
        read_subset_file(tmp_path / "missing.txt")


def test_subset_must_not_overlap_validation(cifar_train, cifar_test):
    train = image_dataset(eval_data(), cifar_train, None, True)
    keep = balanced_subset(train.targets, 0.1, seed=0)
    check_disjoint(train.images.paths, image_dataset(eval_data(), cifar_test, None, False), keep)
    same = image_dataset(eval_data(), cifar_train, None, False)
    with pytest.raises(DataError, match="shares 50 images with the validation set"):
        check_disjoint(train.images.paths, same, keep)


def test_labels_tag():
    assert [labels_tag(f) for f in (0.01, 0.1, 0.02, 0.005, 1.0)] == [
        "1%", "10%", "2%", "0.5%", "100%"]
