"""Model zoo, training/export helpers and the bundled digits model."""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL = "digits_cnn.onnx"


def bundled_model_path() -> Path:
    """Path of the bundled, trained digits CNN (``digits_cnn.onnx``, input 1x1x8x8)."""
    return Path(__file__).resolve().parent / BUNDLED_MODEL
