"""Dataset specs: digits split, npz, restricted CIFAR-10 unpickling, random."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from pimc.compiler.errors import PimcError
from pimc.runtime.datasets import CIFAR_MEAN, CIFAR_STD, load_dataset, resize_bilinear, safe_unpickle


def test_digits_split_is_fixed_and_quarter() -> None:
    test = load_dataset("digits", (1, 8, 8), seed=5)
    train = load_dataset("digits", (1, 8, 8), split="train", seed=7)
    assert len(test) == 450 and len(train) == 1347
    assert abs(len(test) / (len(test) + len(train)) - 0.25) < 0.01
    np.testing.assert_array_equal(test.x, load_dataset("digits", (1, 8, 8)).x)
    np.testing.assert_array_equal(test.y, load_dataset("digits", (1, 8, 8)).y)
    assert set(np.unique(test.y)) == set(range(10))
    assert test.x.dtype == np.float32 and test.x.min() == -1.0 and test.x.max() == 1.0


def test_digits_resized_and_replicated() -> None:
    data = load_dataset("digits", (3, 32, 32), limit=10)
    assert data.x.shape == (10, 3, 32, 32) and data.y.shape == (10,)
    np.testing.assert_array_equal(data.x[:, 0], data.x[:, 2])


def test_resize_bilinear_constant_and_mean() -> None:
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(resize_bilinear(np.ones_like(x), 5, 13), 1.0)
    up = resize_bilinear(x, 16, 16)
    assert up.shape == (2, 1, 16, 16)
    np.testing.assert_allclose(up.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=0.02)


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 1, 8, 8), np.float32), y=np.arange(10))
    test = load_dataset(f"npz:{path}", (1, 8, 8))
    train = load_dataset(f"npz:{path}", (1, 8, 8), split="train", seed=3)
    assert test.x.shape == (2, 1, 8, 8) and len(train) == 8
    assert sorted([*test.y, *train.y]) == list(range(10))
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8))
    assert load_dataset(f"npz:{path}", (3, 16, 16)).x.shape == (4, 3, 16, 16)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2, 8, 8))}, "2 channels"),
        ({"x": np.zeros((4, 8))}, "shape"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(3, np.int64)}, "'y' has shape"),
        ({"z": np.zeros((4, 1, 8, 8))}, "no array named 'x'"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PimcError, match=message):
        load_dataset(f"npz:{path}", (3, 8, 8))


def test_npz_with_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PimcError, match="obj.npz"):
        load_dataset(f"npz:{path}", (1, 8, 8))


def _cifar_batch(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in rng.integers(0, 10, count)],
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [b"a.png"] * count,
    }


def test_cifar10_reader(tmp_path: Path) -> None:
    batch = _cifar_batch(5, 0)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=3))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(_cifar_batch(7, 1)))
    test = load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    assert test.x.shape == (5, 3, 32, 32) and list(test.y) == batch[b"labels"]
    pixel = batch[b"data"][0].reshape(3, 32, 32)[:, 0, 0] / 255.0
    np.testing.assert_allclose(test.x[0, :, 0, 0], (pixel - CIFAR_MEAN) / CIFAR_STD, rtol=1e-5)
    assert len(load_dataset(f"cifar10:{tmp_path}", (3, 16, 16), split="train")) == 7


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps({b"data": _Evil(), b"labels": [0]})
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        safe_unpickle(payload)
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(PimcError, match="not allowed"):
        load_dataset(f"cifar10:{tmp_path}", (3, 32, 32))
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_random_is_seeded() -> None:
    a = load_dataset("random", (3, 4, 4), seed=1, limit=3)
    assert a.y is None and a.x.shape == (3, 3, 4, 4)
    np.testing.assert_array_equal(a.x, load_dataset("random", (3, 4, 4), seed=1, limit=3).x)


@pytest.mark.parametrize("spec", ["mnist:x", "emnist", "npz:/no/such.npz", "cifar10:/no/such/dir", "digits:x", "npz:"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(PimcError):
        load_dataset(spec, (1, 8, 8))
