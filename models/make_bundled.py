"""Regenerate the bundled model: ``python -m pimc.models.make_bundled [-o PATH]``.

Trains ``digits_cnn`` on the fixed digits training split with a fixed seed and exports it with the
legacy exporter. Training runs single-threaded so the weights do not depend on the core count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import bundled_model_path
from .train import digits_arrays, evaluate_torch, export_onnx, make_loader, train_classifier
from .zoo import build_model, model_input_shape

NAME = "digits_cnn"
SEED = 0
EPOCHS = 30
LR = 3e-3
BATCH = 64


def make_bundled(path: Path, progress: bool = True) -> float:
    """Train and export the bundled model to ``path``; return its torch test accuracy."""
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    shape = model_input_shape(NAME)
    model = build_model(NAME)
    x, y = digits_arrays(shape, "train")
    train_classifier(model, make_loader(x, y, BATCH, True, SEED), EPOCHS, lr=LR, seed=SEED, progress=progress)
    export_onnx(model, path, shape)
    return evaluate_torch(model, *digits_arrays(shape, "test"))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=bundled_model_path())
    args = parser.parse_args(argv)
    acc = make_bundled(args.output)
    print(f"wrote {args.output} (torch test accuracy {acc:.2%})")


if __name__ == "__main__":
    main()
