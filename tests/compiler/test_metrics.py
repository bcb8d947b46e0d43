"""The quality metrics against scikit-image's reference implementations, and the metric chosen by the data."""

from __future__ import annotations

import numpy as np

from pimc.compiler.metrics import TOP1, luma, metric_for, psnr_y, ssim_y


def _images(seed: int, count: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, 20, 24)).astype(np.float32)


def test_psnr_on_y_with_the_border_shaved_matches_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _images(0), np.clip(_images(0) + 0.05 * _images(1), 0, 1)
    ours = psnr_y(b, a, shave=2)
    for i in range(len(a)):
        ya, yb = luma(a[i : i + 1])[0, 2:-2, 2:-2], luma(b[i : i + 1])[0, 2:-2, 2:-2]
        assert abs(ours[i] - peak_signal_noise_ratio(ya, yb, data_range=255.0)) < 1e-6


def test_luma_is_bt601_on_0_255():
    white, black = np.ones((1, 3, 2, 2)), np.zeros((1, 3, 2, 2))
    assert np.allclose(luma(white), 235.0) and np.allclose(luma(black), 16.0)


def test_ssim_matches_scikit_image_with_a_uniform_window():
    from skimage.metrics import structural_similarity

    a, b = _images(2), np.clip(_images(2) + 0.1 * _images(3), 0, 1)
    ours = ssim_y(b, a)
    for i in range(len(a)):
        ref = structural_similarity(luma(a[i : i + 1])[0], luma(b[i : i + 1])[0], win_size=7, data_range=255.0,
                                    gaussian_weights=False, use_sample_covariance=False)
        assert abs(ours[i] - ref) < 0.02


def test_the_metric_follows_the_targets():
    assert metric_for(np.zeros((2, 3, 4, 4)), np.array([0, 1])) is TOP1
    psnr = metric_for(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 12, 12), np.float32))
    assert (psnr.name, psnr.unit, psnr.shave, psnr.default_budget) == ("psnr", "dB", 3, 0.1)
