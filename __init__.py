"""pimc: an ONNX graph-rewriting compiler for compressed CNNs.

``pimc.compress(model, train_loader, method=..., output=..., input_shape=..., **options)`` is the library
entry of the training-aware exporters (see ``app/compress.py``); it is imported on first use, so
``import pimc`` does not import torch."""

from __future__ import annotations

from typing import Any

from .compiler.version import VERSION as __version__

__all__ = ["__version__", "compress"]


def __getattr__(name: str) -> Any:
    if name == "compress":
        from .app.compress import compress

        return compress
    raise AttributeError(f"module 'pimc' has no attribute {name!r}")
