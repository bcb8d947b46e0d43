"""CiM target reports for zoo exports (ResNet-20, ResNet-18, VGG-16) and the bundled digits model.

Exports each zoo model (seeded random weights), compiles it with the CiM target's default pipeline
(fold-constants, eliminate-identity, fold-batchnorm, fuse-relu with --data digits, signed 8b quantize,
cleanup) and prints network throughput, TOPS/W, the energy breakdown and the per-layer utilisation.
Equivalent CLI per model:

    pimc models export resnet20 -o resnet20.onnx
    pimc compile resnet20.onnx --target cim --data digits --report resnet20.cim.json

Run: python benchmarks/cim_reports.py [--out DIR] [--models resnet20,resnet18,vgg16] [--hw FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from pimc.app.compile import CompileOptions, compile_model
from pimc.models import bundled_model_path


def export(name: str, out: Path) -> Path:
    path = out / f"{name}.onnx"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "pimc.cli.main", "models", "export", name, "-o", str(path)],
                       check=True, capture_output=True)
    return path


def summarise(name: str, cost: dict) -> str:
    e = cost["energy_breakdown_j"]
    total = cost["energy_j"]
    util = [layer["utilization"] for layer in cost["layers"]]
    rows = [layer["row_utilization"] for layer in cost["layers"]]
    fusion = cost["relu_fusion"]
    lines = [
        f"== {name}: {len(cost['layers'])} layers, latency {cost['latency_cycles']:.0f} cycles = "
        f"{cost['latency_s'] * 1e3:.3f} ms, energy {total * 1e6:.3f} uJ",
        f"   throughput {cost['throughput_gops']:.2f} GOPS (peak {cost['peak_gops']:.1f}), "
        f"{cost['tops_per_w']:.2f} TOPS/W (peak {cost['peak_tops_per_w']:.2f}), utilisation {cost['utilization']:.3f}",
        "   energy: " + ", ".join(f"{k} {v * 1e6:.3f} uJ ({100 * v / total:.1f} %)" for k, v in e.items()),
        f"   per-layer utilisation min/median/max {min(util):.3f}/{statistics.median(util):.3f}/{max(util):.3f}; "
        f"row utilisation median {statistics.median(rows):.3f}; weights resident {cost['weights_resident']}",
        f"   ReLU fusion: {fusion['fused_layers']} layers, mean measured p_neg {fusion['mean_neg_fraction']:.3f} "
        f"({', '.join(fusion['sources'])}), ADC saving {fusion['adc_saving_j'] * 1e9:.2f} nJ = "
        f"{100 * fusion['adc_saving_fraction']:.2f} % of ADC energy",
        f"   {'layer':<48} {'K':>5} {'Cout':>5} {'P':>5} {'tiles':>5} {'loads':>5} {'util':>6} {'cycles':>9}",
    ]
    for layer in cost["layers"]:
        lines.append(f"   {layer['name'][-48:]:<48} {layer['k_rows']:>5} {layer['cout']:>5} {layer['positions']:>5} "
                     f"{layer['row_tiles_max']:>5} {layer['weight_loads']:>5} {layer['utilization']:>6.3f} "
                     f"{layer['cycles']:>9}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="cim_reports", help="folder for exports and JSON reports")
    parser.add_argument("--models", default="resnet20,resnet18,vgg16")
    parser.add_argument("--hw", default=None, help="hardware config TOML for the cim target")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = {"digits_cnn": bundled_model_path()}
    for name in [m for m in args.models.split(",") if m]:
        inputs[name] = export(name, out)
    for name, path in inputs.items():
        report_path = out / f"{name}.cim.json"
        _, report = compile_model(CompileOptions(
            input=str(path), target="cim", output=str(out / f"{name}.cim.onnx"), report=str(report_path),
            data="digits", hw=args.hw,
        ))
        print(summarise(name, report["cost"]), flush=True)
    print(json.dumps({"reports": str(out)}))


if __name__ == "__main__":
    main()
