"""Model zoo, training/export helpers and the bundled digits model."""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL = "digits_cnn.onnx"


def bundled_model_path() -> Path:
    """Path of the bundled, trained digits CNN (``digits_cnn.onnx``, input 1x1x8x8)."""
    return Path(__file__).resolve().parent / BUNDLED_MODEL


# the bundled model compressed by pimc's own exporters (``python -m pimc.models.make_bundled --twins``):
# target → (file beside the bundled model, the ``pimc export`` method that made it, the target's baseline
# that runs the dense bundled model instead, or None where the demo times the dense model itself)
TWINS: dict[str, tuple[str, str, str | None]] = {
    "cim": ("digits_cnn.pattern.onnx", "pattern", "input"),
    "cmp-pim": ("digits_cnn.lbc.onnx", "comparator", "cnn"),
    "escalate": ("digits_cnn.penni.onnx", "decompose", "dense"),
    "onnxruntime": ("digits_cnn.penni.onnx", "decompose", None),
}


def twin_path(file: str) -> Path:
    return bundled_model_path().parent / file
