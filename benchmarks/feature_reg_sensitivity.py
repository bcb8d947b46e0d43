"""Why a lossy pass compresses the feature-regularized model less than its dense twin.

For the exporter's ``r.onnx`` and ``d.onnx`` it measures, on the digits *test* split (a diagnosis, nothing is
chosen from it):

* **margin**: per sample, the gap between the two largest logits over the logit norm; a thin margin means a
  small perturbation flips the prediction;
* **sensitivity**: one conv's weights get seeded Gaussian noise of ``eps`` × their RMS (the kind of error a
  decomposition leaves); reported are the relative change of the logits and the accuracy change in points,
  averaged over ``--seeds`` draws. The hard gates ``Where(|x| > t, x, 0)`` jump by t at the threshold, so a
  feature pushed across it changes by about t, where a ReLU's output changes by at most the push.

    python benchmarks/feature_reg_sensitivity.py --regularized r.onnx --dense d.onnx [--convs NAME,...]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
from onnx import numpy_helper

DEFAULT_CONVS = ("/features/features.2/features.2.2/conv1/Conv", "/features/features.3/features.3.0/conv1/Conv")


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = _session(model)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 150]})[0] for i in range(0, len(x), 150)])


def perturbed(model: onnx.ModelProto, conv: str, eps: float, seed: int) -> onnx.ModelProto:
    """A copy with conv's weight W + eps·rms(W)·N(0, 1)."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    node = next(n for n in copy.graph.node if n.name == conv)
    init = next(t for t in copy.graph.initializer if t.name == node.input[1])
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(seed).standard_normal(w.shape) * eps * np.sqrt(np.mean(w.astype(np.float64) ** 2))
    init.CopyFrom(numpy_helper.from_array((w + noise).astype(w.dtype), init.name))
    return copy


def margins(z: np.ndarray) -> np.ndarray:
    top = np.sort(z, axis=1)
    return (top[:, -1] - top[:, -2]) / np.maximum(np.linalg.norm(z, axis=1), 1e-12)


def measure(path: str, convs: list[str], eps_list: list[float], seeds: int) -> dict:
    from pimc.runtime.datasets import load_dataset
    from pimc.runtime.session import model_input

    model = onnx.load(path)
    _, shape, _ = model_input(path)
    test = load_dataset("digits", shape, split="test")
    x = test.x.astype(np.float32)
    base = logits(model, x)
    gap = margins(base)
    out = {"model": path, "accuracy": float(np.mean(base.argmax(1) == test.y)),
           "median_margin": float(np.median(gap)), "thin_margin_fraction": float(np.mean(gap < 0.1)), "noise": []}
    for conv in convs:
        for eps in eps_list:
            rel, acc = [], []
            for seed in range(seeds):
                z = logits(perturbed(model, conv, eps, seed), x)
                rel.append(float(np.linalg.norm(z - base) / np.linalg.norm(base)))
                acc.append(100 * float(np.mean(z.argmax(1) == test.y) - out["accuracy"]))
            out["noise"].append({"conv": conv, "eps": eps, "relative_logit_change": float(np.mean(rel)),
                                 "accuracy_change_points": float(np.mean(acc))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regularized", required=True)
    parser.add_argument("--dense", required=True)
    parser.add_argument("--convs", default=",".join(DEFAULT_CONVS))
    parser.add_argument("--eps", default="0.05,0.2")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    eps = [float(v) for v in args.eps.split(",")]
    results = [measure(p, args.convs.split(","), eps, args.seeds) for p in (args.dense, args.regularized)]
    for r in results:
        print(f"{r['model']}: accuracy {r['accuracy']:.4f}, median margin {r['median_margin']:.3f}, "
              f"margin < 0.1 on {r['thin_margin_fraction']:.2%} of the test samples")
        for n in r["noise"]:
            print(f"  {n['conv']} eps {n['eps']}: logits change {n['relative_logit_change']:.4f}, "
                  f"accuracy {n['accuracy_change_points']:+.2f} points")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
