"""Cross-check of the escalate target's dense-baseline cycle counts against ZigZag (pip ``zigzag-dse``).

Both sides model the same dense accelerator: a weight-stationary MAC array (K over one array
dimension, C over the other) as in ZigZag's ``tpu_like`` example, which this script copies (size from
``--array``, default 16×16 = the escalate dense baseline; pimc's ``dense_rows``/``dense_cols`` are set
to match). ZigZag searches the temporal mapping (LOMA) and reports, per layer, the ideal cycle count
(MACs / utilised PEs, from its spatial mapping) and its latency including memory stalls. pimc reports
the dense path's ``compute_cycles`` (min of weight- and output-stationary) and ``cycles`` (max of compute and
DRAM time). The table compares them layer by layer on a shape-inferred, BatchNorm-folded export.

    pip install zigzag-dse six
    python benchmarks/zigzag_crosscheck.py                 # zoo ResNet-20 (32x32), ~5 min on 2 busy cores
    python benchmarks/zigzag_crosscheck.py --model resnet18
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import onnx
import yaml

from pimc.backends.escalate import EscalateConfig, cost_schedule, lower_workload
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext
from pimc.compiler.pipeline import PassManager, build_pipeline
from pimc.compiler.workload import extract_workload


def dense_export(name: str, folder: Path) -> Path:
    from pimc.models.train import export_onnx
    from pimc.models.zoo import MODELS, build_model

    raw = folder / f"{name}.onnx"
    export_onnx(build_model(name), raw, MODELS[name].input_shape)
    passes = build_pipeline([("fold-constants", {}), ("eliminate-identity", {}), ("fold-batchnorm", {}),
                             ("cleanup", {})])
    model = PassManager(passes, PassContext()).run(load_model(raw))
    model = _fixed_batch(model)
    out = folder / f"{name}.dense.onnx"
    onnx.save(model, out)
    return out


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    return onnx.shape_inference.infer_shapes(model)


def zigzag_inputs(folder: Path, rows: int, cols: int) -> tuple[Path, Path]:
    import zigzag

    base = Path(zigzag.__file__).parent / "inputs"
    hw = yaml.safe_load((base / "hardware" / "tpu_like.yaml").read_text())
    hw["name"] = f"pimc_dense_{rows}x{cols}"
    hw["operational_array"]["sizes"] = [rows, cols]
    mapping = [
        {"name": "default", "spatial_mapping": {"D1": [f"K, {rows}"], "D2": [f"C, {cols}"]},
         "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}},
    ]
    mapping += [{"name": op, "spatial_mapping": {"D1": [f"G, {rows}"], "D2": ["C, 1"]},
                 "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}} for op in ("Add", "Pooling")]
    hw_path, map_path = folder / "hw.yaml", folder / "mapping.yaml"
    hw_path.write_text(yaml.safe_dump(hw, sort_keys=False))
    map_path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return hw_path, map_path


def run_zigzag(model_path: Path, hw_path: Path, map_path: Path, dump: Path) -> dict[str, dict[str, float]]:
    from zigzag.api import get_hardware_performance_zigzag

    _, _, results = get_hardware_performance_zigzag(
        str(model_path), str(hw_path), str(map_path), opt="latency", dump_folder=str(dump),
        loma_show_progress_bar=False,
    )
    logging.disable(logging.INFO)
    per_layer = {}
    layer_results = results[0][1] if results and isinstance(results[0][1], list) else results
    for cme, _ in layer_results:
        per_layer[cme.layer.name] = {
            "ideal": float(cme.ideal_cycle), "ideal_temporal": float(cme.ideal_temporal_cycle),
            "latency": float(cme.latency_total2), "macs": float(cme.layer.total_mac_count),
        }
    return per_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", help="zoo model name")
    parser.add_argument("--array", type=int, default=16, help="rows = columns of the MAC array")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    hw = EscalateConfig(dense_rows=args.array, dense_cols=args.array)
    folder = Path(tempfile.mkdtemp(prefix="pimc-zigzag-"))
    model_path = dense_export(args.model, folder)
    plans = lower_workload(extract_workload(onnx.load(model_path)), hw)
    ours = {layer["name"]: layer for layer in cost_schedule(plans, hw).layers}
    hw_path, map_path = zigzag_inputs(folder, hw.dense_rows, hw.dense_cols)
    theirs = run_zigzag(model_path, hw_path, map_path, folder / "zigzag")
    print(f"{'layer':48s} {'MACs':>10s} {'pimc compute':>12s} {'pimc total':>11s} {'zz ideal':>10s} "
          f"{'zz temporal':>11s} {'zz latency':>11s} {'compute/temporal':>16s}")
    totals = [0.0] * 5
    for name, layer in ours.items():
        z = theirs.get(name)
        if z is None:
            print(f"{name:48s} (not reported by ZigZag)")
            continue
        row = [layer["compute_cycles"], layer["cycles"], z["ideal"], z["ideal_temporal"], z["latency"]]
        totals = [t + v for t, v in zip(totals, row, strict=True)]
        print(f"{name[-48:]:48s} {layer['macs']:>10,d} {row[0]:>12,.0f} {row[1]:>11,.0f} {row[2]:>10,.0f} "
              f"{row[3]:>11,.0f} {row[4]:>11,.0f} {row[0] / row[3]:>16.3f}")
    print(f"{'total':48s} {'':>10s} {totals[0]:>12,.0f} {totals[1]:>11,.0f} {totals[2]:>10,.0f} "
          f"{totals[3]:>11,.0f} {totals[4]:>11,.0f} {totals[0] / totals[3]:>16.3f}")


if __name__ == "__main__":
    main()
