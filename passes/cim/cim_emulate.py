"""cim-emulate: rewrite every Conv / Gemm / MatMul so onnxruntime computes what the CiM macro computes.

The macro evaluates a dot product of length N (``rows``) per cycle and converts it with one B-bit ADC
(``adc_bits``). A layer Y = X·W + b (im2col form; per group for grouped convs) is emulated as

    W_t[c, k] = W[c, k] / g_c   if weight (c, k) sits in row tile t, else 0
    s_t       = X · W_t                                   (analog partial sum of tile t, integer-weight units)
    q_t       = clip(round(s_t / Δ + ε_t), −2^(B−1), 2^(B−1) − 1)           (one A/D conversion)
    Y         = g_c · Δ · Σ_t q_t + b                      (digital accumulation, scale and bias)

* Row tiles are those of the CiM target (``pimc.backends.cim.tile_assignment``): dense layers split the
  im2col rows (cin, ky, kx) into consecutive tiles of N; pattern-pruned layers pack each output channel's
  kept weights densely first, so their tiles are fewer and differ per channel.
* g_c is the per-output-channel weight scale: the DequantizeLinear scale of a quantized weight (so
  W / g_c are the int8 codes the cells hold), else max|W_c| / 127. The analog sum is in integer-weight
  units, as in the array, and one ADC range serves the whole layer.
* ADC range: full scale FS = the ``full_scale`` percentile of |s_t| over all tiles, channels and positions
  of the layer on calibration inputs (``--data``; random inputs otherwise, which the stats say). This
  models a per-layer programmable ADC reference (assumption); Δ = FS / 2^(B−1). Values beyond FS clip.
* Analog error: ε_t ~ N(0, (σ·FS/Δ)²) = N(0, (σ·2^(B−1))²) in LSB, i.e. additive Gaussian noise on the
  analog partial sum with standard deviation σ·FS (σ = ``sigma``, default 0.002 ≈ 0.26 LSB of an 8b ADC:
  an assumption, in line with the sub-LSB output noise reported for charge-domain macros).
  ``noise = temporal`` draws fresh noise for every conversion with onnxruntime's RandomNormalLike (seeded,
  so a session gives the same sequence every time); ``noise = static`` stores one fixed draw per
  conversion position (tile, channel, output pixel) as an initializer — a fixed-pattern offset shared by
  all samples (device mismatch). σ = 0 emulates only quantization and clipping.
* ReLU: the macro fuses ReLU into the LAST conversion by resolving the sign of the accumulated total
  first; numerically that equals ReLU(Y), so the graph's Relu stays where it is (still marked fused).

Inserted nodes carry ``role = "cim_emulation"`` and ``layer = <original node>``; the stacked matrix
product keeps the original node's name and annotations plus ``cim_tiles``, ``cim_rows``, ``cim_sigma``,
``cim_adc_bits`` and ``cim_full_scale`` so the CiM target still costs it as the original layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...backends.cim import pattern_row_mask, tile_assignment, weight_matrix
from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import all_names, attr, opset_version, producers, unique_name, value_shapes
from ...compiler.passbase import Option, Pass, PassContext, PassResult
from ...compiler.verify import run_model
from ...compiler.workload import LayerRecord, constant_value, extract_workload

ROLE = "cim_emulation"
_MAX_CALIBRATION_VALUES = 400_000


@dataclass
class TiledLayer:
    record: LayerRecord
    node: onnx.NodeProto
    stacked: np.ndarray  # Conv: [g·T·Cout_g, Cin_g, kh, kw]; MatMul/Gemm: [K, T·Cout]
    tiles: int
    channel_scale: np.ndarray  # g_c, [Cout]
    bias: np.ndarray | None
    out_shape: list[int]


class CimEmulate(Pass, name="cim-emulate"):
    """Emulate the CiM macro in the graph: per-row-tile A/D quantization, clipping and analog noise."""

    options = (
        Option("rows", int, 64, "dot-product length N of the macro (keep equal to the target's rows)", minimum=1),
        Option("adc_bits", int, 8, "ADC resolution B", minimum=1, maximum=16),
        Option("sigma", float, 0.002, "analog noise std as a fraction of the ADC full scale (assumption)",
               minimum=0.0),
        Option("noise", str, "temporal", "temporal: fresh per conversion; static: one fixed draw per position",
               choices=("temporal", "static")),
        Option("full_scale", float, 99.99, "percentile of |partial sums| that sets the ADC full scale",
               minimum=50.0, maximum=100.0),
        Option("samples", int, 32, "calibration samples for the ADC range", minimum=1),
        Option("seed", int, -1, "noise seed (-1: the compile --seed)"),
    )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if opset_version(model) < 11:
            raise PimcError("cim-emulate needs opset 11 or newer (Round, Clip with inputs)")
        layers, skipped = self._tile_layers(model)
        if not layers:
            return PassResult(model, False, {"layers": {}, "skipped": skipped})
        scales = self._calibrate(model, layers, ctx)
        seed = ctx.seed if self.opts["seed"] < 0 else self.opts["seed"]
        stats: dict[str, dict] = {}
        names = all_names(model.graph)
        for index, layer in enumerate(layers):
            fs, clipped = scales[layer.node.name]
            _replace(model, layer, fs, self.opts, seed + index, names)
            stats[layer.node.name] = {
                "tiles": layer.tiles, "full_scale": fs, "lsb": fs / 2 ** (self.opts["adc_bits"] - 1),
                "calibration_clip_fraction": clipped,
                "relu_fused": ann.get_node_annotation(layer.node, "fused_activation") == "Relu",
            }
        source = ctx.data_spec if ctx.has_real_data else "random"
        return PassResult(model, True, {"layers": stats, "skipped": skipped, "calibration": source,
                                        "noise": self.opts["noise"], "sigma": self.opts["sigma"]})

    def _tile_layers(self, model: onnx.ModelProto) -> tuple[list[TiledLayer], list[dict[str, str]]]:
        records = extract_workload(model).by_name()
        shapes = value_shapes(model)
        layers, skipped = [], []
        for node in model.graph.node:
            record = records.get(node.name)
            if record is None:
                continue
            reason = _unsupported(model, node, record, shapes)
            if reason:
                skipped.append({"node": node.name, "reason": reason})
                continue
            layers.append(self._tile(model, node, record, shapes))
        return layers, skipped

    def _tile(self, model, node, record: LayerRecord, shapes) -> TiledLayer:
        w3 = weight_matrix(record)
        mask = pattern_row_mask(record)
        tiles = tile_assignment(w3, self.opts["rows"], mask)
        count = int(tiles.max()) + 1 if tiles.size and tiles.max() >= 0 else 1
        scale = _channel_scale(model, node, record, w3)
        g, cout_g, k = w3.shape
        scaled = w3 / scale.reshape(g, cout_g, 1)
        stacked = np.stack([np.where(tiles == t, scaled, 0.0) for t in range(count)], axis=1)  # [g,T,Cout_g,K]
        if record.op == "Conv":
            weight = stacked.reshape(g * count * cout_g, *np.asarray(record.weight).shape[1:])
        else:
            weight = stacked.reshape(count * cout_g, k).T
        bias = _bias(model, node, record)
        out_shape = list(shapes[node.output[0]])
        return TiledLayer(record, node, weight.astype(np.float32), count, scale.reshape(-1), bias, out_shape)

    def _calibrate(self, model, layers: list[TiledLayer], ctx: PassContext) -> dict[str, tuple[float, float]]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        names = all_names(probe.graph)
        outputs = []
        for layer in layers:
            w_name = unique_name(names, f"{layer.node.name}.cim_probe_w")
            out = unique_name(names, f"{layer.node.name}.cim_probe")
            probe.graph.initializer.append(numpy_helper.from_array(layer.stacked, w_name))
            probe.graph.node.append(_stacked_node(layer, layer.node.input[0], w_name, out, f"{out}_node"))
            probe.graph.output.append(helper.make_empty_tensor_value_info(out))
            outputs.append(out)
        feeds = ctx.calibration_feeds(model, count=self.opts["samples"])[: self.opts["samples"]]
        first = len(probe.graph.output) - len(outputs)
        rng = np.random.default_rng(0)
        values: list[list[np.ndarray]] = [[] for _ in layers]
        for outs in run_model(probe, feeds):
            for i, value in enumerate(outs[first:]):
                flat = np.abs(np.asarray(value, dtype=np.float32)).reshape(-1)
                if flat.size > _MAX_CALIBRATION_VALUES // max(len(feeds), 1):
                    flat = rng.choice(flat, _MAX_CALIBRATION_VALUES // max(len(feeds), 1), replace=False)
                values[i].append(flat)
        result = {}
        for layer, chunks in zip(layers, values, strict=True):
            data = np.concatenate(chunks) if chunks else np.zeros(1, np.float32)
            fs = float(np.percentile(data, self.opts["full_scale"])) if data.size else 0.0
            fs = fs if fs > 0 else 1.0
            result[layer.node.name] = (fs, float(np.mean(data > fs)))
        return result


def _unsupported(model, node, record: LayerRecord, shapes) -> str | None:
    if node.op_type not in ("Conv", "Gemm", "MatMul"):
        return f"{node.op_type} is not emulated"
    if node.op_type == "Conv" and record.spatial_dims != 2:
        return f"{record.spatial_dims}-D Conv is not emulated (2-D only)"
    if record.weight is None:
        return "weight is not a constant"
    if node.op_type == "Gemm" and (attr(node, "transA", 0) or len(shapes.get(node.input[0]) or []) != 2):
        return "Gemm with transA or non-2-D input"
    if node.op_type == "MatMul" and np.asarray(record.weight).ndim != 2:
        return "MatMul weight is not 2-D"
    shape = shapes.get(node.output[0])
    if not shape or any(not isinstance(d, int) for d in shape[1:]):
        return "output shape unknown (run shape inference / give static spatial sizes)"
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] and _bias(model, node, record) is None:
        return "Gemm bias C is not a constant vector"
    return None


def _channel_scale(model, node, record: LayerRecord, w3: np.ndarray) -> np.ndarray:
    """g_c [groups, Cout_g]: the weight's DequantizeLinear per-channel scale, else max|W_c| / 127."""
    g, cout_g, _ = w3.shape
    dq = producers(model.graph).get(node.input[1])
    if dq is not None and dq.op_type == "DequantizeLinear":
        scale = constant_value(model, dq.input[1])
        if scale is not None and scale.size in (1, g * cout_g) and np.all(scale > 0):
            return np.broadcast_to(scale.astype(np.float32).reshape(-1), (g * cout_g,)).reshape(g, cout_g).copy()
    peak = np.abs(w3).max(axis=2) / 127.0
    return np.where(peak > 0, peak, 1.0).astype(np.float32)


def _bias(model, node, record: LayerRecord) -> np.ndarray | None:
    if len(node.input) < 3 or not node.input[2]:
        return None
    value = constant_value(model, node.input[2])
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32)
    if node.op_type == "Gemm":
        value = value * float(attr(node, "beta", 1.0))
        if value.size == 1:
            value = np.full(record.cout, value.reshape(()), np.float32)
        if value.size != record.cout:
            return None
    return value.reshape(-1)


def _stacked_node(layer: TiledLayer, x: str, w: str, out: str, name: str) -> onnx.NodeProto:
    node = layer.node
    if node.op_type != "Conv":
        return helper.make_node("MatMul", [x, w], [out], name=name)
    keep = {a.name: helper.get_attribute_value(a) for a in node.attribute
            if a.name in ("strides", "pads", "dilations", "group", "auto_pad")}
    keep["kernel_shape"] = list(np.asarray(layer.record.weight).shape[2:])
    return helper.make_node("Conv", [x, w], [out], name=name, **keep)


def _replace(model: onnx.ModelProto, layer: TiledLayer, fs: float, opts: dict, seed: int, names: set[str]) -> None:
    graph = model.graph
    node, record = layer.node, layer.record
    base = node.name
    half = 2 ** (opts["adc_bits"] - 1)
    lsb = fs / half
    t, cout = layer.tiles, record.cout
    groups = max(record.groups, 1) if record.op == "Conv" else 1
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(suffix: str, value) -> str:
        name = unique_name(names, f"{base}.cim_{suffix}")
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def emit(op: str, inputs: list[str], suffix: str, **attrs) -> str:
        out = unique_name(names, f"{base}.cim_{suffix}")
        new = helper.make_node(op, inputs, [out], name=unique_name(names, f"{base}/cim_{suffix}"), **attrs)
        ann.set_node_annotation(new, "role", ROLE)
        ann.set_node_annotation(new, "layer", base)
        nodes.append(new)
        return out

    stacked_out = unique_name(names, f"{base}.cim_psum")
    stacked = _stacked_node(layer, node.input[0], const("w", layer.stacked), stacked_out, base)
    for key, value in ann.node_annotations(node).items():
        ann.set_node_annotation(stacked, key, value)
    for key, value in (("role", ROLE), ("layer", base), ("cim_tiles", t), ("cim_rows", opts["rows"]),
                       ("cim_sigma", opts["sigma"]), ("cim_adc_bits", opts["adc_bits"]),
                       ("cim_full_scale", fs)):
        ann.set_node_annotation(stacked, key, value)
    nodes.append(stacked)
    if record.op == "Conv":
        h, w = layer.out_shape[2], layer.out_shape[3]
        grid = [groups, t, cout // groups, h, w]
        split = emit("Reshape", [stacked_out, const("split", np.array([-1, *grid], np.int64))], "split")
        sum_axis, merged_shape = 2, np.array([-1, cout, h, w], np.int64)
        chan_shape = [1, cout, 1, 1]
    else:
        rank = len(layer.out_shape)
        grid = [t, cout]
        split = emit("Reshape", [stacked_out, const("split", np.array([0] * (rank - 1) + grid, np.int64))], "split")
        sum_axis, merged_shape, chan_shape = rank - 1, None, [cout]
    codes = emit("Div", [split, const("lsb", np.float32(lsb))], "codes")
    if opts["sigma"] > 0:
        std = float(opts["sigma"] * half)
        if opts["noise"] == "temporal":
            noise = emit("RandomNormalLike", [split], "noise", scale=std, seed=float(seed))
        else:
            draw = np.random.default_rng(seed).standard_normal(grid).astype(np.float32) * std
            noise = const("noise", draw)
        codes = emit("Add", [codes, noise], "noisy")
    rounded = emit("Round", [codes], "round")
    clipped = emit("Clip", [rounded, const("lo", np.float32(-half)), const("hi", np.float32(half - 1))], "adc")
    if opset_version(model) >= 13:
        total = emit("ReduceSum", [clipped, const("axis", np.array([sum_axis], np.int64))], "accumulate",
                     keepdims=0)
    else:
        total = emit("ReduceSum", [clipped], "accumulate", axes=[sum_axis], keepdims=0)
    if merged_shape is not None:
        total = emit("Reshape", [total, const("merge", merged_shape)], "merge")
    alpha = float(attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0
    gain = (layer.channel_scale * lsb * alpha).astype(np.float32).reshape(chan_shape)
    result = emit("Mul", [total, const("gain", gain)], "scale")
    if layer.bias is not None:
        emit("Add", [result, const("bias", layer.bias.reshape(chan_shape).astype(np.float32))], "bias")
    nodes[-1].output[0] = node.output[0]
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(position + offset, new)
    graph.initializer.extend(inits)
