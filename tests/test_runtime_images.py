"""Super-resolution data: MATLAB-style bicubic degradation, the fixed split by image, tiles of the model's
size, and a user's own folder of images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pimc.compiler.errors import PimcError
from pimc.runtime.datasets import load_dataset
from pimc.runtime.images import TEST_MIN, bicubic, imresize, pairs, parse_spec, source_images, split


def test_imresize_agrees_with_pillow_bicubic_and_keeps_a_constant():
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.random((40, 36, 3)).astype(np.float32)
    ours = imresize(image, 0.5)
    pillow = np.asarray(Image.fromarray((image * 255).round().astype(np.uint8)).resize((18, 20), Image.BICUBIC))
    assert ours.shape == (20, 18, 3)
    assert np.abs(ours - pillow / 255.0).mean() < 0.01
    assert np.allclose(imresize(np.full((9, 9, 3), 0.3, np.float32), 2.0), 0.3, atol=1e-6)


def test_split_is_by_image_fixed_and_holds_out_at_least_five():
    train, test = split(20)
    assert len(test) >= TEST_MIN and not set(train) & set(test) and len(train) + len(test) == 20
    assert np.array_equal(split(20)[1], test)


def test_pairs_are_low_and_high_resolution_tiles_of_the_model_size():
    low, high, names = pairs("sr-samples:2", (16, 20), "test")
    assert low.shape[1:] == (3, 16, 20) and high.shape[1:] == (3, 32, 40) and len(names) == len(low)
    assert 0.0 <= low.min() and high.max() <= 1.0
    train_names = set(pairs("sr-samples:2", (16, 16), "train", count=64)[2])
    assert not train_names & set(names)  # no image in both parts


def test_a_dataset_of_image_targets_is_scored_in_psnr():
    data = load_dataset("sr-samples:3", (3, 16, 16), "test")
    assert data.metric.name == "psnr" and data.metric.shave == 3 and data.metric.unit == "dB"
    assert 20.0 < data.metric.value(bicubic(data.x, 3), data.y) < 40.0


def _write_images(folder, count: int, size: tuple[int, int] = (64, 72)) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(count):
        smooth = np.cumsum(rng.random((*size, 3)), axis=0)
        Image.fromarray((255 * smooth / smooth.max()).astype(np.uint8)).save(folder / f"img{i}.png")


def test_a_folder_of_the_users_png_images(tmp_path):
    _write_images(tmp_path, 8)
    assert parse_spec(f"sr:{tmp_path}:2")[1:] == (tmp_path, 2)
    assert len(source_images(tmp_path)) == 8
    data = load_dataset(f"sr:{tmp_path}:2", (3, 16, 16), "test")
    assert data.x.shape[1:] == (3, 16, 16) and data.y.shape[1:] == (3, 32, 32)
    with pytest.raises(PimcError, match="no such folder"):
        load_dataset(f"sr:{tmp_path / 'none'}", (3, 8, 8))
    few = tmp_path / "few"
    few.mkdir()
    _write_images(few, 3)
    with pytest.raises(PimcError, match="at least"):
        load_dataset(f"sr:{few}", (3, 8, 8))


@pytest.mark.parametrize("spec", ["sr-samples:5", "sr:", "sr-samples:x"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(PimcError):
        load_dataset(spec, (3, 8, 8))


def test_pimc_run_on_a_folder_reports_psnr(tmp_path):
    import torch

    from pimc.models.sr_zoo import espcn
    from pimc.models.train import export_onnx

    _write_images(tmp_path, 7, (100, 100))  # a symbolic model takes 48 x 48 tiles: 96 x 96 at x2
    torch.manual_seed(0)
    model = tmp_path / "espcn.onnx"
    export_onnx(espcn(2), model, (3, 16, 16))
    done = subprocess.run([sys.executable, "-m", "pimc", "run", str(model), "--data", f"sr:{tmp_path}:2",
                           "--repeats", "1", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"metric": "psnr"' in done.stdout
