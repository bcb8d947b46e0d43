"""``pimc inspect``: a model summary and every pimc annotation it carries."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from rich.console import Console

from ..compiler import annotations as ann
from ..compiler.graph import opset_version, real_inputs, value_shapes
from ..compiler.stats import model_stats
from ..compiler.storage import model_storage
from ..compiler.tables import Table
from ..compiler.tables import console as make_console


def inspect_model(model: onnx.ModelProto) -> dict[str, Any]:
    stats = model_stats(model)
    shapes = value_shapes(model)
    nodes = []
    for node in model.graph.node:
        notes = ann.node_annotations(node)
        if notes:
            maps = {}
            for kind in notes.get("maps") or {}:
                arr = ann.get_node_map(model, node, kind)
                if arr is not None:
                    maps[kind] = _map_summary(arr)
            nodes.append({"name": node.name, "op": node.op_type, "annotations": notes, "maps": maps})
    return {
        "ir_version": model.ir_version,
        "opset": opset_version(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [{"name": i.name, "shape": shapes.get(i.name)} for i in real_inputs(model)],
        "outputs": [{"name": o.name, "shape": shapes.get(o.name)} for o in model.graph.output],
        "nodes": stats.nodes,
        "node_count": stats.node_count,
        "params": stats.params,
        "nonzero_params": stats.nonzero_params,
        "macs": stats.macs,
        "effective_macs": stats.effective_macs,
        "node_annotations": nodes,
        "tensor_annotations": ann.tensor_annotations(model),
        "storage": model_storage(model),
    }


def break_even_info(model: onnx.ModelProto, target: str | None, hw_path: str | None) -> dict[str, Any]:
    """The target's per-layer break-even pruning ratios (``Target.break_even``)."""
    from ..compiler.errors import PimcError
    from ..compiler.loader import infer_shapes
    from ..compiler.target import get_target

    if not target:
        raise PimcError("--break-even needs --target")
    t = get_target(target)
    layers = t.break_even(infer_shapes(model, "inspect"), t.config(hw_path))
    if layers is None:
        return {"target": target, "layers": [], "note": f"target '{target}' has no sparse path: zero weights "
                "cost as much as non-zero ones, so no pruning ratio breaks even"}
    return {"target": target, "layers": layers,
            "note": "break_even_sparsity: lowest fraction of zero weights (spread evenly over output rows) at "
                    "which the sparse path takes no more cycles than the dense path; ratio = 1 / (1 - sparsity)"}


def _map_summary(arr: np.ndarray) -> dict[str, Any]:
    values, counts = np.unique(arr, return_counts=True)
    summary: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if values.size <= 64:
        summary["histogram"] = {str(v.item()): int(c) for v, c in zip(values, counts, strict=True)}
    if np.issubdtype(arr.dtype, np.number):
        summary["mean"] = float(arr.mean())
    return summary


def render_inspection(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or make_console()
    console.print(f"[bold]opset {info['opset']}[/], IR {info['ir_version']}, producer {info['producer'] or '-'}")
    for i in info["inputs"]:
        console.print(f"input  {i['name']}: {i['shape']}")
    for o in info["outputs"]:
        console.print(f"output {o['name']}: {o['shape']}")
    console.print(f"{info['node_count']} nodes: " + ", ".join(f"{k}×{v}" for k, v in info["nodes"].items()))
    console.print(f"params {info['params']:,} (non-zero {info['nonzero_params']:,}), "
                  f"MACs {info['macs']:,} (effective {info['effective_macs']:,})")
    store = info.get("storage") or {}
    if store.get("bits"):
        forms = sorted({x["format"] for x in store["layers"].values()})
        console.print(f"weight storage {store['bits']:,.0f} bits ({', '.join(forms)}) vs dense fp32 "
                      f"{store['dense_fp32_bits']:,.0f} bits of {store['reference']}: {store['ratio']}× "
                      f"(weights + index alone: {store['weights_ratio']}×)")
    if info["node_annotations"]:
        table = Table(title="node annotations (pimc.*)")
        table.add_column("node")
        table.add_column("op")
        table.add_column("annotations")
        for n in info["node_annotations"]:
            shown = {k: v for k, v in n["annotations"].items() if k != "maps"}
            text = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
            for kind, m in n["maps"].items():
                text += f"\nmap {kind} {m['shape']}"
                if "histogram" in m:
                    text += " histogram " + _histogram_text(m["histogram"])
            table.add_row(n["name"], n["op"], text)
        console.print(table)
    else:
        console.print("no pimc node annotations")
    if "break_even" in info:
        _render_break_even(info["break_even"], console)
    for tensor, values in info["tensor_annotations"].items():
        console.print(f"tensor {tensor}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))


def _histogram_text(hist: dict[str, int]) -> str:
    total = sum(hist.values()) or 1
    return " ".join(f"{k}:{v}({100 * v / total:.0f}%)" for k, v in hist.items())


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render_break_even(data: dict[str, Any], console: Console) -> None:
    table = Table(title=f"break-even pruning ratio on {data['target']}")
    for col in ("layer", "break-even sparsity", "ratio", "model sparsity", "sparse pays"):
        table.add_column(col)
    for row in data["layers"]:
        s = row["break_even_sparsity"]
        table.add_row(row["layer"], "never" if s is None else f"{s:.3f}",
                      "-" if row["break_even_ratio"] is None else f"{row['break_even_ratio']:.2f}×",
                      f"{row['sparsity']:.3f}", "yes" if row["sparse_pays"] else "no")
    console.print(table)
    console.print(data["note"], markup=False)
