"""Image-to-image data (super-resolution): natural images, the bicubic degradation and the fixed split.

Specs (``runtime.datasets.load_dataset``):

* ``sr-samples:S`` (S = 2, 3 or 4): the natural photographs shipped inside scikit-image's wheel
  (``SKIMAGE_IMAGES``) and scikit-learn's two sample images (china, flower);
* ``sr:DIR[:S]``: every PNG / JPEG / BMP / TIFF in a folder of the user's high-resolution images (e.g. BSD100,
  Set14, DIV2K); S defaults to 2.

Protocol (the usual SR one). A high-resolution image H (RGB in [0, 1]; a grey image is replicated to three
channels) is cut into tiles of S times the model's input size, and each tile's low-resolution input is
L = bicubic(H, 1/S), MATLAB's ``imresize``: Keys' cubic kernel (a = −0.5) widened by S when shrinking, so it
also anti-aliases; L is clipped to [0, 1] and rounded to 8-bit levels, as a saved image would be. The
images are split **by image**, seeded and fixed (``SPLIT_SEED``): ``max(TEST_MIN, ⌈TEST_FRACTION·n⌉)`` whole
images are held out as the test set, the rest train. A sample is an (L, H) pair of one tile:

* train: ``TRAIN_PATCHES`` patches of the model's input size h × w at seeded random positions of the
  training images (each patch randomly flipped / transposed), so a model with any input size trains;
* test: from each held-out image, up to ``TEST_TILES_PER_SIDE``² non-overlapping tiles of h × w around its
  centre (the whole image when it holds fewer).

The metric of such a set is PSNR (``compiler/metrics.py``). Inputs and targets stay in [0, 1].
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from ..compiler.errors import PimcError

SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket",
                  "camera", "coins", "brick", "grass", "gravel", "moon", "page", "text", "clock")
SKIMAGE_STEREO = ("motorcycle_left", "motorcycle_right")  # the two views of skimage.data.stereo_motorcycle()
SKLEARN_IMAGES = ("china", "flower")
SCALES = (2, 3, 4)
SPLIT_SEED = 0
TEST_FRACTION = 0.25
TEST_MIN = 5
TRAIN_PATCHES = 2048
TEST_TILES_PER_SIDE = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_TILE = 48  # low-resolution tile side when the model's spatial size is symbolic


def parse_spec(spec: str) -> tuple[str, Path | None, int]:
    """(kind, folder or None, scale) of ``sr-samples:S`` or ``sr:DIR[:S]``."""
    kind, _, arg = spec.partition(":")
    if kind == "sr-samples":
        return kind, None, _scale(arg or "2", spec)
    folder, scale = arg, "2"
    head, sep, tail = arg.rpartition(":")
    if sep and tail.isdigit():
        folder, scale = head, tail
    if not folder:
        raise PimcError(f"--data {spec}: give the folder, sr:DIR[:S]")
    return kind, Path(folder), _scale(scale, spec)


def _scale(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) not in SCALES:
        raise PimcError(f"--data {spec}: the scale must be one of {', '.join(map(str, SCALES))}")
    return int(text)


@functools.lru_cache(maxsize=4)
def source_images(folder: Path | None) -> tuple[tuple[str, np.ndarray], ...]:
    """(name, H × W × 3 float32 image in [0, 1]) of every source image, in a fixed order."""
    if folder is None:
        return tuple(_bundled_images())
    if not folder.is_dir():
        raise PimcError(f"--data sr:{folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < TEST_MIN + 1:
        raise PimcError(f"--data sr:{folder}: needs at least {TEST_MIN + 1} images ({TEST_MIN} are held out), "
                        f"found {len(paths)}")
    return tuple((p.name, _read(p)) for p in paths)


def _bundled_images() -> list[tuple[str, np.ndarray]]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = [(name, getattr(skimage.data, name)()) for name in SKIMAGE_IMAGES]
    left, right, _ = skimage.data.stereo_motorcycle()
    images += list(zip(SKIMAGE_STEREO, (left, right), strict=True))
    bunch = load_sample_images()
    images += [(Path(f).stem, image) for f, image in zip(bunch.filenames, bunch.images, strict=True)]
    return [(name, _as_rgb(image)) for name, image in images]


def _read(path: Path) -> np.ndarray:
    import skimage.io

    try:
        image = skimage.io.imread(path)
    except Exception as exc:  # a broken or unsupported file: one clear line
        raise PimcError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return _as_rgb(image)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """H × W × 3 float32 in [0, 1] (grey replicated, alpha dropped)."""
    scale = 255.0 if image.dtype == np.uint8 else 65535.0 if image.dtype == np.uint16 else 1.0
    x = np.asarray(image, dtype=np.float32) / scale
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if x.ndim != 3 or x.shape[2] < 3:
        raise PimcError(f"an image of shape {image.shape} is not grey or RGB")
    return np.clip(x[:, :, :3], 0.0, 1.0)


def split(names: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) image indices: the fixed, seeded split by image."""
    order = np.random.default_rng(SPLIT_SEED).permutation(names)
    cut = max(TEST_MIN, math.ceil(TEST_FRACTION * names))
    return np.sort(order[cut:]), np.sort(order[:cut])


def pairs(spec: str, tile: tuple[int, int] | None, part: str, seed: int = 0,
          count: int = TRAIN_PATCHES) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(low-resolution N × 3 × h × w, high-resolution N × 3 × Sh × Sw, the source image of each sample) of
    ``part`` ("train" or "test"); ``tile``: the model's (h, w), or None for ``DEFAULT_TILE``."""
    _, folder, scale = parse_spec(spec)
    h, w = tile or (DEFAULT_TILE, DEFAULT_TILE)
    images = source_images(folder)
    train, test = split(len(images))
    chosen = [images[i] for i in (train if part == "train" else test)]
    hr_tiles = _train_patches(chosen, h * scale, w * scale, count, seed) if part == "train" else \
        _test_tiles(chosen, h * scale, w * scale)
    if not hr_tiles:
        raise PimcError(f"--data {spec}: no {part} image holds a {h * scale}x{w * scale} tile")
    names = [name for name, _ in hr_tiles]
    hr = np.stack([t for _, t in hr_tiles]).transpose(0, 3, 1, 2)
    lr = np.stack([to_8bit(imresize(t, 1.0 / scale)) for _, t in hr_tiles]).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(lr, np.float32), np.ascontiguousarray(hr, np.float32), names


def _train_patches(images: list[tuple[str, np.ndarray]], ph: int, pw: int, count: int,
                   seed: int) -> list[tuple[str, np.ndarray]]:
    usable = [(n, im) for n, im in images if im.shape[0] >= ph and im.shape[1] >= pw]
    if not usable:
        return []
    rng = np.random.default_rng((SPLIT_SEED, seed))
    out = []
    for _ in range(count):
        name, image = usable[int(rng.integers(len(usable)))]
        top = int(rng.integers(image.shape[0] - ph + 1))
        left = int(rng.integers(image.shape[1] - pw + 1))
        patch = image[top : top + ph, left : left + pw]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        if ph == pw and rng.random() < 0.5:
            patch = patch.transpose(1, 0, 2)
        out.append((name, np.ascontiguousarray(patch)))
    return out


def _test_tiles(images: list[tuple[str, np.ndarray]], th: int, tw: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, image in images:
        rows = min(TEST_TILES_PER_SIDE, image.shape[0] // th)
        cols = min(TEST_TILES_PER_SIDE, image.shape[1] // tw)
        top = (image.shape[0] - rows * th) // 2
        left = (image.shape[1] - cols * tw) // 2
        out += [(name, image[top + r * th : top + (r + 1) * th, left + c * tw : left + (c + 1) * tw])
                for r in range(rows) for c in range(cols)]
    return out


def to_8bit(image: np.ndarray) -> np.ndarray:
    """Clipped to [0, 1] and rounded to 8-bit levels, as a low-resolution image saved as PNG would be."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0


def bicubic(low: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: every N × C × h × w input enlarged ``scale`` times by ``imresize``."""
    return np.stack([imresize(x.transpose(1, 2, 0), float(scale)).transpose(2, 0, 1) for x in low])


def imresize(image: np.ndarray, factor: float) -> np.ndarray:
    """MATLAB ``imresize(image, factor, 'bicubic')`` of an H × W × C array (antialiased when shrinking)."""
    out = image
    for axis in (0, 1):
        size = int(math.ceil(image.shape[axis] * factor))
        indices, weights = _contributions(image.shape[axis], size, factor)
        taken = np.take(out, indices, axis=axis)  # (..., size, taps, ...)
        shape = [1] * taken.ndim
        shape[axis], shape[axis + 1] = weights.shape
        out = np.sum(taken * weights.reshape(shape), axis=axis + 1)
    return out.astype(np.float32)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel, a = −0.5."""
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(size_in: int, size_out: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (size_out × taps, edges replicated) and normalised weights, as MATLAB computes them."""
    width = 4.0 / factor if factor < 1 else 4.0
    centre = np.arange(1, size_out + 1, dtype=np.float64) / factor + 0.5 * (1 - 1 / factor)
    first = np.floor(centre - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = first[:, None] + np.arange(taps)[None, :]
    distance = centre[:, None] - indices
    weights = factor * _cubic(distance * factor) if factor < 1 else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(indices - 1, 0, size_in - 1).astype(np.int64), weights.astype(np.float32)
