"""Post-training comparator-conv substitution of a trained model: per-layer fit error, accuracy before and
after, and CMP-PIM cost, for several anchor counts.

    pimc models train resnet20 --data digits -o r20.onnx
    python benchmarks/cmp_pim_posttrain.py r20.onnx --data digits --anchors 0,64,256
"""

from __future__ import annotations

import argparse
import json

from pimc.app.compile import CompileOptions, compile_model


def run(model: str, data: str, anchors: int, comparator: str, samples: int) -> dict:
    _, report = compile_model(CompileOptions(
        input=model, target="cmp-pim", data=data, write_output=False,
        sets=(f"comparator-conv.anchors={anchors}", f"comparator-conv.comparator={comparator}",
              f"comparator-conv.samples={samples}"),
    ))
    stats = next(p["stats"] for p in report["passes"] if p["name"] == "comparator-conv")
    cost = report["cost"]
    return {
        "anchors": anchors or "auto (Cin·k²)", "comparator": comparator,
        "accuracy_before": stats.get("accuracy_before"), "accuracy_after": stats.get("accuracy_after"),
        "mean_fit_error": round(stats["mean_fit_error"], 4),
        "fit_error": {layer["layer"]: round(layer["fit_error"], 4) for layer in stats["layers"]},
        "energy_gain_vs": {k: round(v, 3) for k, v in cost["energy_gain_vs"].items()},
        "speedup_vs": {k: round(v, 3) for k, v in cost["speedup_vs"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--anchors", default="0", help="comma-separated anchor counts (0 = auto)")
    parser.add_argument("--comparator", default="relu", choices=("relu", "binary"))
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    results = [run(args.model, args.data, int(a), args.comparator, args.samples) for a in args.anchors.split(",")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
