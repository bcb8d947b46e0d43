"""Hand-made onnx.helper graphs of the corpus: one builder per case, each a few tiny layers.

Every builder takes a folder and returns the path of the model it wrote (external-data models write
their weight file next to it). Weights are seeded; shapes are small so every target compiles fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

F = TensorProto.FLOAT
Builder = Callable[[Path], Path]


class Net:
    """A tiny graph under construction: seeded weights, auto-named nodes and tensors."""

    def __init__(self, seed: int = 0, dtype: type = np.float32) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, array: np.ndarray, base: str = "c") -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape: int, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const((self.rng.standard_normal(shape) * std).astype(self.dtype), "w")

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, group: int = 1, **attrs) -> str:
        shape = (cout, cin // group) + (k,) * attrs.pop("rank", 2)
        inputs = [x, self.weight(*shape)] + ([self.weight(cout, scale=0.1)] if bias else [])
        return self.op("Conv", inputs, group=group, **attrs)

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.uniform(-0.2, 0.2, c), r.uniform(-0.2, 0.2, c), r.uniform(0.5, 2, c)]
        return self.op("BatchNormalization", [x] + [self.const(p.astype(self.dtype), "bn") for p in params])

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[str], opset: int = 17,
              ir_version: int | None = None, elem: int = F) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, elem, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "corpus", inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir_version or min(model.ir_version, 8)
        inferred = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        onnx.checker.check_model(model, full_check=True)
        return model


def _inp(name: str, shape: list, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _save(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _head(n: Net, x: str, c: int, classes: int = 5) -> str:
    """GlobalAveragePool → Flatten → Gemm classifier."""
    p = n.op("GlobalAveragePool", [x])
    f = n.op("Flatten", [p], axis=1)
    return n.op("Gemm", [f, n.weight(classes, c), n.weight(classes, scale=0.1)], transB=1)


# ----------------------------------------------------------------------------------------------------
# builders


def conv_relu(folder: Path) -> Path:
    n = Net(1)
    y = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1])])
    y = n.op("Relu", [n.conv(y, 8, 8, strides=[2, 2])])
    return _save(n.model([_inp("x", [1, 3, 12, 12])], [_head(n, y, 8)]), folder, "conv_relu")


def conv_transpose_decoder(folder: Path) -> Path:
    """Encoder conv → two stride-2 ConvTranspose (one with pads + output_padding) → conv."""
    n = Net(2)
    y = n.op("Relu", [n.conv("x", 3, 8, strides=[2, 2], pads=[1, 1, 1, 1])])
    y = n.op("ConvTranspose", [y, n.weight(8, 6, 2, 2), n.weight(6, scale=0.1)], strides=[2, 2])
    y = n.op("Relu", [y])
    y = n.op("ConvTranspose", [y, n.weight(6, 4, 3, 3)], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    y = n.conv(y, 4, 2, k=1)
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [y]), folder, "conv_transpose_decoder")


def conv_transpose_grouped(folder: Path) -> Path:
    n = Net(3)
    y = n.op("ConvTranspose", ["x", n.weight(4, 3, 3, 3)], group=2, strides=[1, 1], dilations=[2, 2])
    y = n.op("ConvTranspose", [y, n.weight(6, 2, 3, 3)], auto_pad="SAME_UPPER", strides=[2, 2])
    return _save(n.model([_inp("x", [1, 4, 5, 5])], [n.op("Sigmoid", [y])]), folder, "conv_transpose_grouped")


def conv1d(folder: Path) -> Path:
    n = Net(4)
    y = n.op("Relu", [n.conv("x", 4, 8, k=3, rank=1, pads=[1, 1])])
    y = n.conv(y, 8, 8, k=3, rank=1, strides=[2], dilations=[2], group=2)
    y = n.op("ConvTranspose", [y, n.weight(8, 3, 4)], strides=[2])
    return _save(n.model([_inp("x", [1, 4, 20])], [y]), folder, "conv1d")


def conv3d(folder: Path) -> Path:
    n = Net(5)
    y = n.op("Relu", [n.conv("x", 2, 4, k=3, rank=3, pads=[1] * 6)])
    y = n.conv(y, 4, 4, k=3, rank=3, strides=[1, 2, 2], group=2)
    return _save(n.model([_inp("x", [1, 2, 4, 8, 8])], [n.op("GlobalAveragePool", [y])]), folder, "conv3d")


def grouped_dilated(folder: Path) -> Path:
    n = Net(6)
    y = n.op("Relu", [n.conv("x", 4, 8, group=2, pads=[2, 2, 2, 2], dilations=[2, 2])])
    y = n.op("Relu", [n.conv(y, 8, 8, group=4, dilations=[3, 1], pads=[3, 1, 3, 1])])
    y = n.conv(y, 8, 8, k=5, group=8, dilations=[2, 2], strides=[2, 2])
    return _save(n.model([_inp("x", [1, 4, 14, 14])], [_head(n, y, 8)]), folder, "grouped_dilated")


def _auto_pad(mode: str) -> Builder:
    def build(folder: Path) -> Path:
        n = Net(7)
        y = n.op("Relu", [n.conv("x", 3, 6, auto_pad=mode, strides=[2, 2])])
        y = n.conv(y, 6, 6, k=4, auto_pad=mode)
        y = n.op("MaxPool", [y], kernel_shape=[3, 3], auto_pad=mode, strides=[2, 2])
        return _save(n.model([_inp("x", [1, 3, 11, 11])], [y]), folder, f"auto_pad_{mode.lower()}")

    return build


def fp16(folder: Path) -> Path:
    n = Net(8, dtype=np.float16)
    y = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1])])
    y = n.op("Relu", [n.bn(n.conv(y, 8, 8, bias=False), 8)])
    m = n.model([_inp("x", [1, 3, 10, 10], TensorProto.FLOAT16)], [_head(n, y, 8)], elem=TensorProto.FLOAT16)
    return _save(m, folder, "fp16")


def external_data(folder: Path) -> Path:
    n = Net(9)
    y = n.op("Relu", [n.conv("x", 3, 16, pads=[1, 1, 1, 1])])
    y = n.op("Relu", [n.conv(y, 16, 16)])
    model = n.model([_inp("x", [1, 3, 10, 10])], [_head(n, y, 16)])
    path = folder / "external_data.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external_data.bin", size_threshold=64)
    return path


def ir3_inputs(folder: Path) -> Path:
    """IR 3, opset 8: every initializer also listed as a graph input (the pre-IR-4 convention)."""
    n = Net(10)
    y = n.op("Relu", [n.bn(n.conv("x", 3, 8, pads=[1, 1, 1, 1]), 8)])
    y = n.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = n.op("Relu", [n.conv(y, 8, 8)])
    p = n.op("GlobalAveragePool", [y])
    f = n.op("Flatten", [p])
    y = n.op("Gemm", [f, n.weight(5, 8), n.weight(5, scale=0.1)], transB=1)
    inputs = [_inp("x", [1, 3, 12, 12])] + [_inp(t.name, list(t.dims)) for t in n.inits]
    model = n.model(inputs, [y], opset=8, ir_version=3)
    return _save(model, folder, "ir3_inputs")


def constant_weights(folder: Path) -> Path:
    """Weights and bias come from Constant nodes (no initializers), as some converters write them."""
    n = Net(11)
    y = n.op("Relu", [n.conv("x", 3, 6, pads=[1, 1, 1, 1])])
    y = n.conv(y, 6, 6)
    model = n.model([_inp("x", [1, 3, 8, 8])], [n.op("Relu", [y])])
    inits = list(model.graph.initializer)
    del model.graph.initializer[:]
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in inits]
    nodes = constants + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return _save(model, folder, "constant_weights")


def two_inputs_two_outputs(folder: Path) -> Path:
    n = Net(12)
    a = n.op("Relu", [n.conv("a", 3, 6, pads=[1, 1, 1, 1])])
    b = n.op("Relu", [n.conv("b", 2, 6, pads=[1, 1, 1, 1])])
    s = n.op("Add", [a, b])
    y1 = _head(n, s, 6, classes=3)
    y2 = n.conv(n.op("Concat", [a, b], axis=1), 12, 4, k=1)
    model = n.model([_inp("a", [1, 3, 8, 8]), _inp("b", [1, 2, 8, 8])], [y1, y2])
    return _save(model, folder, "two_inputs_two_outputs")


def dynamic_batch(folder: Path) -> Path:
    n = Net(13)
    y = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1])])
    y = n.op("Relu", [n.conv(y, 8, 8, strides=[2, 2])])
    return _save(n.model([_inp("x", ["N", 3, 10, 10])], [_head(n, y, 8)]), folder, "dynamic_batch")


def symbolic_hw(folder: Path) -> Path:
    """Symbolic H and W (a fully convolutional net): simulators need --input-shape."""
    n = Net(14)
    y = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1])])
    y = n.op("Relu", [n.conv(y, 8, 8, pads=[1, 1, 1, 1])])
    return _save(n.model([_inp("x", ["N", 3, "H", "W"])], [_head(n, y, 8)]), folder, "symbolic_hw")


def bn_unfolded(folder: Path) -> Path:
    """BatchNormalizations no Conv precedes (on the input, after an Add, after a pool): they stay."""
    n = Net(15)
    x = n.bn("x", 3)
    a = n.conv(x, 3, 6, pads=[1, 1, 1, 1])
    b = n.conv(x, 3, 6, k=1)
    y = n.op("Relu", [n.bn(n.op("Add", [a, b]), 6)])
    y = n.bn(n.op("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2]), 6)
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [_head(n, y, 6)]), folder, "bn_unfolded")


def conv_attention(folder: Path) -> Path:
    """Conv features → tokens → single-head self-attention (MatMul, Softmax, MatMul) → Gemm."""
    n = Net(16)
    c, t = 8, 16
    y = n.op("Relu", [n.conv("x", 3, c, strides=[2, 2], pads=[1, 1, 1, 1])])
    tokens = n.op("Transpose", [n.op("Reshape", [y, n.const(np.array([1, c, t], np.int64))])], perm=[0, 2, 1])
    q = n.op("MatMul", [tokens, n.weight(c, c)])
    k = n.op("MatMul", [tokens, n.weight(c, c)])
    v = n.op("MatMul", [tokens, n.weight(c, c)])
    scores = n.op("MatMul", [q, n.op("Transpose", [k], perm=[0, 2, 1])])
    attn = n.op("Softmax", [n.op("Mul", [scores, n.const(np.array(c ** -0.5, np.float32))])], axis=-1)
    ctx = n.op("Add", [n.op("MatMul", [attn, v]), tokens])
    pooled = n.op("ReduceMean", [ctx], axes=[1], keepdims=0)
    y = n.op("Gemm", [pooled, n.weight(c, 4)])
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [y], opset=13), folder, "conv_attention")


def gemm_flatten(folder: Path) -> Path:
    n = Net(17)
    y = n.op("Relu", [n.conv("x", 1, 4, k=3)])
    y = n.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    f = n.op("Flatten", [y], axis=1)
    h = n.op("Relu", [n.op("Gemm", [f, n.weight(36, 16), n.weight(16, scale=0.1)])])
    z = n.op("Gemm", [h, n.weight(10, 16), n.weight(10, scale=0.1)], transB=1, alpha=0.5, beta=2.0)
    return _save(n.model([_inp("x", [1, 1, 8, 8])], [n.op("Softmax", [z], axis=1)]), folder, "gemm_flatten")


def pools(folder: Path) -> Path:
    n = Net(18)
    y = n.op("Relu", [n.conv("x", 3, 6, pads=[1, 1, 1, 1])])
    y = n.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = n.op("AveragePool", [n.conv(y, 6, 6, pads=[1, 1, 1, 1])], kernel_shape=[3, 3], strides=[1, 1],
             pads=[1, 1, 1, 1], count_include_pad=0)
    y = n.op("GlobalMaxPool", [y])
    return _save(n.model([_inp("x", [1, 3, 12, 12])], [y]), folder, "pools")


def resize(folder: Path) -> Path:
    n = Net(19)
    y = n.op("Relu", [n.conv("x", 3, 4, strides=[2, 2], pads=[1, 1, 1, 1])])
    y = n.op("Resize", [y, "", n.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = n.conv(y, 4, 4, pads=[1, 1, 1, 1])
    y = n.op("Resize", [y, "", "", n.const(np.array([1, 4, 12, 12], np.int64))], mode="linear")
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [n.conv(y, 4, 2, k=1)], opset=13), folder, "resize")


def upsample_opset9(folder: Path) -> Path:
    n = Net(20)
    y = n.op("Relu", [n.conv("x", 3, 4, pads=[1, 1, 1, 1])])
    y = n.op("Upsample", [y, n.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    return _save(n.model([_inp("x", [1, 3, 6, 6])], [n.conv(y, 4, 2)], opset=9), folder, "upsample_opset9")


def pad_ops(folder: Path) -> Path:
    n = Net(21)
    y = n.op("Pad", ["x", n.const(np.array([0, 0, 2, 1, 0, 0, 2, 1], np.int64))], mode="reflect")
    y = n.op("Relu", [n.conv(y, 3, 6)])
    y = n.op("Pad", [y, n.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), n.const(np.array(0.5, np.float32))])
    y = n.conv(y, 6, 6)
    y = n.op("Pad", [y, n.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="edge")
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [y], opset=13), folder, "pad_ops")


def activations(folder: Path) -> Path:
    n = Net(22)
    y = n.op("Clip", [n.conv("x", 3, 6, pads=[1, 1, 1, 1]), n.const(np.array(0.0, np.float32)),
                      n.const(np.array(6.0, np.float32))])
    y = n.op("LeakyRelu", [n.conv(y, 6, 6, pads=[1, 1, 1, 1])], alpha=0.1)
    y = n.op("HardSwish", [n.conv(y, 6, 6, pads=[1, 1, 1, 1])])
    y = n.op("Sigmoid", [n.conv(y, 6, 6, k=1)])
    y = n.op("HardSigmoid", [n.conv(y, 6, 6, k=1)])
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [_head(n, y, 6)], opset=14), folder, "activations")


def se_block(folder: Path) -> Path:
    n = Net(23)
    y = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1])])
    s = n.op("Flatten", [n.op("GlobalAveragePool", [y])])
    s = n.op("Relu", [n.op("Gemm", [s, n.weight(2, 8), n.weight(2, scale=0.1)], transB=1)])
    s = n.op("Sigmoid", [n.op("Gemm", [s, n.weight(8, 2), n.weight(8, scale=0.1)], transB=1)])
    s = n.op("Reshape", [s, n.const(np.array([1, 8, 1, 1], np.int64))])
    y = n.op("Mul", [y, s])
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [_head(n, y, 8)], opset=13), folder, "se_block")


def _converted(opset: int) -> Builder:
    """Built at an older opset (the converter has no down-adapters for most ops) and upgraded to ``opset``."""
    base = 6 if opset == 7 else 7

    def build(folder: Path) -> Path:
        n = Net(24)
        y = n.op("Relu", [n.bn(n.conv("x", 3, 8, pads=[1, 1, 1, 1]), 8)])
        y = n.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        y = n.op("Relu", [n.bn(n.conv(y, 8, 8, bias=False), 8)])
        y = n.op("Reshape", [n.op("GlobalAveragePool", [y]), n.const(np.array([1, 8], np.int64))])
        extra = {"broadcast": 1} if base < 7 else {}
        y = n.op("Gemm", [y, n.weight(4, 8), n.weight(4, scale=0.1)], transB=1, **extra)
        model = n.model([_inp("x", [1, 3, 10, 10])], [y], opset=base)
        return _save(version_converter.convert_version(model, opset), folder, f"converted_opset{opset}")

    return build


def batched_matmul(folder: Path) -> Path:
    """3-D activations times constant 2-D weights (a token MLP), and a 1-D MatMul operand."""
    n = Net(25)
    y = n.op("Relu", [n.op("MatMul", ["x", n.weight(8, 16)])])
    y = n.op("Add", [n.op("MatMul", [y, n.weight(16, 8)]), "x"])
    y = n.op("MatMul", [y, n.weight(8)])
    return _save(n.model([_inp("x", [2, 5, 8])], [y]), folder, "batched_matmul")


def depthwise_separable(folder: Path) -> Path:
    n = Net(26)
    y = n.op("Relu", [n.conv("x", 3, 8, strides=[2, 2], pads=[1, 1, 1, 1])])
    for c_in, c_out in ((8, 16), (16, 16)):
        y = n.op("Relu", [n.conv(y, c_in, c_in, group=c_in, pads=[1, 1, 1, 1])])
        y = n.op("Relu", [n.conv(y, c_in, c_out, k=1)])
    return _save(n.model([_inp("x", [1, 3, 12, 12])], [_head(n, y, 16)]), folder, "depthwise_separable")


def residual_sum(folder: Path) -> Path:
    """Residual blocks joined by Sum (three inputs) and by Add with a 1x1 projection, no bias on convs."""
    n = Net(27)
    x = n.op("Relu", [n.conv("x", 3, 8, pads=[1, 1, 1, 1], bias=False)])
    a = n.conv(n.op("Relu", [n.conv(x, 8, 8, pads=[1, 1, 1, 1], bias=False)]), 8, 8, pads=[1, 1, 1, 1])
    y = n.op("Relu", [n.op("Sum", [x, a, n.conv(x, 8, 8, k=1)])])
    b = n.conv(y, 8, 12, strides=[2, 2], pads=[1, 1, 1, 1])
    y = n.op("Relu", [n.op("Add", [b, n.conv(y, 8, 12, k=1, strides=[2, 2])])])
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [_head(n, y, 12)]), folder, "residual_sum")


def unet_concat(folder: Path) -> Path:
    """Two-level UNet: down convs, ConvTranspose up, skip Concat, output 1x1 conv."""
    n = Net(28)
    e1 = n.op("Relu", [n.conv("x", 1, 4, pads=[1, 1, 1, 1])])
    e2 = n.op("Relu", [n.conv(n.op("MaxPool", [e1], kernel_shape=[2, 2], strides=[2, 2]), 4, 8, pads=[1, 1, 1, 1])])
    u = n.op("ConvTranspose", [e2, n.weight(8, 4, 2, 2), n.weight(4, scale=0.1)], strides=[2, 2])
    d = n.op("Relu", [n.conv(n.op("Concat", [u, e1], axis=1), 8, 4, pads=[1, 1, 1, 1])])
    return _save(n.model([_inp("x", [1, 1, 8, 8])], [n.conv(d, 4, 2, k=1)]), folder, "unet_concat")


def dense_concat(folder: Path) -> Path:
    """DenseNet block: each layer reads the concat of all previous maps."""
    n = Net(29)
    feats = [n.conv("x", 3, 4, pads=[1, 1, 1, 1])]
    for i in range(3):
        inp = feats[0] if i == 0 else n.op("Concat", feats, axis=1)
        c_in = 4 * (i + 1)
        feats.append(n.conv(n.op("Relu", [n.bn(inp, c_in)]), c_in, 4, pads=[1, 1, 1, 1], bias=False))
    y = n.op("Concat", feats, axis=1)
    y = n.op("AveragePool", [n.conv(y, 16, 8, k=1)], kernel_shape=[2, 2], strides=[2, 2])
    return _save(n.model([_inp("x", [1, 3, 8, 8])], [_head(n, y, 8)]), folder, "dense_concat")


def conv_only_1x1(folder: Path) -> Path:
    """Pointwise convs only (nothing to decompose), batch 3, an Identity and a Dropout to eliminate."""
    n = Net(30)
    y = n.op("Identity", [n.op("Relu", [n.conv("x", 4, 8, k=1)])])
    y = n.op("Dropout", [y])
    return _save(n.model([_inp("x", [3, 4, 5, 5])], [n.conv(y, 8, 3, k=1)], opset=13), folder, "conv_only_1x1")


BUILDERS: dict[str, Builder] = {
    "conv_relu": conv_relu,
    "conv_transpose_decoder": conv_transpose_decoder,
    "conv_transpose_grouped": conv_transpose_grouped,
    "conv1d": conv1d,
    "conv3d": conv3d,
    "grouped_dilated": grouped_dilated,
    "auto_pad_same_upper": _auto_pad("SAME_UPPER"),
    "auto_pad_same_lower": _auto_pad("SAME_LOWER"),
    "auto_pad_valid": _auto_pad("VALID"),
    "fp16": fp16,
    "external_data": external_data,
    "ir3_inputs": ir3_inputs,
    "constant_weights": constant_weights,
    "two_inputs_two_outputs": two_inputs_two_outputs,
    "dynamic_batch": dynamic_batch,
    "symbolic_hw": symbolic_hw,
    "bn_unfolded": bn_unfolded,
    "conv_attention": conv_attention,
    "gemm_flatten": gemm_flatten,
    "pools": pools,
    "resize": resize,
    "upsample_opset9": upsample_opset9,
    "pad_ops": pad_ops,
    "activations": activations,
    "se_block": se_block,
    "converted_opset7": _converted(7),
    "converted_opset9": _converted(9),
    "converted_opset11": _converted(11),
    "batched_matmul": batched_matmul,
    "depthwise_separable": depthwise_separable,
    "residual_sum": residual_sum,
    "unet_concat": unet_concat,
    "dense_concat": dense_concat,
    "conv_only_1x1": conv_only_1x1,
}
