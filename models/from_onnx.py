"""A user's own model for the exporters: an ONNX file turned into a trainable torch module, or a factory.

``OnnxModule`` interprets the (normalised, BatchNorm-folded) ONNX graph node by node. Every Conv with a
constant weight becomes an ``nn.Conv2d`` and every Gemm / MatMul with a constant 2-D weight an
``nn.Linear`` (so the exporters find and constrain them like a zoo model's layers); the other ops are
functional: Relu, LeakyRelu, Sigmoid, Tanh, Clip, BatchNormalization (left-over, frozen statistics),
MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean, DepthToSpace, Add, Sub, Mul, Div, Concat,
Flatten, Reshape, Identity, Dropout, Softmax. Constant operands are buffers. The layers are called as modules (so hooks,
parametrizations and in-place replacements by ``LBConv2d`` / ``DecomposedConv2d`` work) and the module
traces with ``torch.fx`` (PENNI's residual-channel grouping). ``rename_io`` gives an exported file back
the original model's input and output names.

``file.py:factory`` imports ``factory`` from a Python file and calls it with ``num_classes`` (if it takes
it); the input shape then comes from ``--input-shape C,H,W`` or a ``input_shape`` attribute.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ..compiler.errors import PimcError
from ..compiler.graph import attr, real_inputs

_ELEMENTWISE = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Identity": lambda x: x, "Dropout": lambda x: x,
}
_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


def _key(name: str, used: set[str]) -> str:
    base = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "layer"
    key, i = base, 1
    while key in used:
        key, i = f"{base}_{i}", i + 1
    used.add(key)
    return key


class OnnxModule(nn.Module):
    """A torch module computing what the ONNX graph computes, with trainable Conv2d / Linear layers."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = real_inputs(model)
        if len(inputs) != 1 or len(graph.output) != 1:
            raise PimcError("--model FILE.onnx: only models with one input and one output can be trained")
        self.input_name, self.output_name = inputs[0].name, graph.output[0].name
        self.layers = nn.ModuleDict()
        self.keys: dict[str, str] = {}  # ONNX node name → its layer's key in ``layers``
        self.steps: list[tuple[str, list[str], list[str], dict, str | None]] = []
        used: set[str] = set()
        self._consts: dict[str, str] = {}
        for node in graph.node:
            module_key = self._make_layer(node, inits, used)
            for name in node.input:
                if name in inits and name not in self._consts and not (module_key and name in node.input[1:3]):
                    buf = _key(f"const_{name}", used)
                    self.register_buffer(buf, torch.from_numpy(np.array(inits[name])), persistent=True)
                    self._consts[name] = buf
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
                attrs["_shape"] = [int(d) for d in np.asarray(inits[node.input[1]]).reshape(-1)]  # traceable
            self.steps.append((node.op_type, list(node.input), list(node.output), attrs, module_key))

    def _make_layer(self, node: onnx.NodeProto, inits: dict, used: set[str]) -> str | None:
        op = node.op_type
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        b = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or (len(node.input) > 2 and node.input[2] and b is None):
            return None
        if op == "Conv" and w.ndim == 4:
            pads = list(attr(node, "pads", [0, 0, 0, 0]))
            layer = nn.Conv2d(w.shape[1] * int(attr(node, "group", 1)), w.shape[0], tuple(w.shape[2:]),
                              stride=tuple(attr(node, "strides", [1, 1])), dilation=tuple(attr(node, "dilations", [1, 1])),
                              padding=tuple(pads[:2]) if pads[:2] == pads[2:] else 0,
                              groups=int(attr(node, "group", 1)), bias=b is not None)
            layer.weight.data = torch.from_numpy(w.astype(np.float32).copy())
        elif op in ("Gemm", "MatMul") and w.ndim == 2 and not attr(node, "transA", 0):
            if op == "Gemm" and (float(attr(node, "alpha", 1.0)) != 1.0 or float(attr(node, "beta", 1.0)) != 1.0):
                return None
            weight = w if op == "Gemm" and attr(node, "transB", 0) else w.T
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None)
            layer.weight.data = torch.from_numpy(weight.astype(np.float32).copy())
            if b is not None and b.size != weight.shape[0]:
                return None
        else:
            return None
        if b is not None:
            layer.bias.data = torch.from_numpy(b.astype(np.float32).reshape(-1).copy())
        key = _key(node.name or node.output[0], used)
        self.layers[key] = layer
        self.keys[node.name or node.output[0]] = key
        return key

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        return env[name] if name in env else getattr(self, self._consts[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: x}
        for op, ins, outs, attrs, key in self.steps:
            used = ins[:1] if key is not None else ins
            env[outs[0]] = self._run(op, [self._value(env, n) if n else None for n in used], attrs, key)
        return env[self.output_name]

    def _run(self, op: str, xs: list, attrs: dict, key: str | None) -> torch.Tensor:
        if key is not None:
            return self._layer(op, xs[0], attrs, self.layers[key])
        x = xs[0]
        if op in _ELEMENTWISE:
            return _ELEMENTWISE[op](x)
        if op in _BINARY:
            return _BINARY[op](x, xs[1])
        if op == "LeakyRelu":
            return F.leaky_relu(x, float(attrs.get("alpha", 0.01)))
        if op == "Clip":
            lo = xs[1] if len(xs) > 1 and xs[1] is not None else attrs.get("min")
            hi = xs[2] if len(xs) > 2 and xs[2] is not None else attrs.get("max")
            return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))
        if op in ("MaxPool", "AveragePool"):
            return _pool(op, x, attrs)
        if op == "GlobalAveragePool":  # feature maps are NCHW (the convs are Conv2d); rank-free for torch.fx
            return x.mean(dim=(-2, -1), keepdim=True)
        if op == "GlobalMaxPool":
            return x.amax(dim=(-2, -1), keepdim=True)
        if op == "ReduceMean":  # axes: an attribute up to opset 17, an input from 18
            axes = attrs.get("axes") if len(xs) < 2 or xs[1] is None else [int(a) for a in xs[1].tolist()]
            keep = bool(attrs.get("keepdims", 1))
            return x.mean(dim=tuple(int(a) for a in axes), keepdim=keep) if axes else x.mean()
        if op == "DepthToSpace":  # a pixel shuffle: CRD is torch's, DCR moves the block axes first
            block = int(attrs["blocksize"])
            mode = attrs.get("mode", b"DCR")
            if (mode.decode() if isinstance(mode, bytes) else str(mode)) == "CRD":
                return F.pixel_shuffle(x, block)
            n, c, h, w = x.shape
            return (x.reshape(n, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
                    .reshape(n, c // block**2, h * block, w * block))
        if op == "Concat":
            return torch.cat(xs, dim=int(attrs["axis"]))
        if op == "Flatten":  # a non-negative axis needs no rank, so torch.fx can trace the module
            axis = int(attrs.get("axis", 1))
            axis = axis if axis >= 0 else axis % max(x.dim(), 1)
            if axis == 0:
                return x.reshape(1, -1)
            return torch.flatten(torch.flatten(x, axis), 0, axis - 1)
        if op == "Reshape":
            shape = attrs["_shape"] if "_shape" in attrs else [int(s) for s in xs[1].tolist()]
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return x.reshape(shape)
        if op == "Softmax":
            return torch.softmax(x, dim=int(attrs.get("axis", -1)))
        if op == "BatchNormalization":
            return F.batch_norm(x, xs[3], xs[4], xs[1], xs[2], False, 0.0, float(attrs.get("epsilon", 1e-5)))
        raise PimcError(f"--model FILE.onnx: op {op} is not supported by the ONNX → torch conversion")

    @staticmethod
    def _layer(op: str, x: torch.Tensor, attrs: dict, layer: nn.Module) -> torch.Tensor:
        """Call the layer module itself, so hooks, parametrizations and replacements (LBConv2d,
        DecomposedConv2d) see the call; a Conv's asymmetric pads are applied before it."""
        if op == "Conv":
            if str(attrs.get("auto_pad", b"NOTSET")).strip("b'") not in ("NOTSET", "VALID"):
                raise PimcError("--model FILE.onnx: Conv auto_pad SAME is not supported; re-export with explicit pads")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        return layer(x)


def _pool(op: str, x: torch.Tensor, attrs: dict) -> torch.Tensor:
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", [1] * len(kernel)))
    pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
    ceil = bool(attrs.get("ceil_mode", 0))
    if pads[:2] != pads[2:]:
        raise PimcError(f"--model FILE.onnx: {op} with asymmetric pads is not supported")
    if op == "MaxPool":
        return F.max_pool2d(x, kernel, strides, tuple(pads[:2]), ceil_mode=ceil)
    return F.avg_pool2d(x, kernel, strides, tuple(pads[:2]), ceil_mode=ceil,
                        count_include_pad=bool(attrs.get("count_include_pad", 0)))


def load_onnx_module(path: str | Path, input_shape: tuple[int, ...] | None = None
                     ) -> tuple[OnnxModule, tuple[int, int, int], onnx.ModelProto]:
    """The module, its (C, H, W) input shape and the normalised, BatchNorm-folded source model; ``input_shape``
    gives the training size of a model whose height and width are symbolic (an image-to-image model)."""
    from ..compiler.loader import load_model
    from ..compiler.passbase import PassContext, get_pass
    from ..compiler.pipeline import PassManager

    model = load_model(path)
    passes = [get_pass(n)() for n in ("fold-constants", "eliminate-identity", "fold-batchnorm", "cleanup")]
    model = PassManager(passes, PassContext()).run(model)
    dims = real_inputs(model)[0].type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) for d in dims[1:])
    if input_shape is not None and len(shape) == 3 and shape[0] in (0, input_shape[0]):
        shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise PimcError(f"{path}: the input must be NCHW with known C, H, W (got {shape}; a model with a symbolic "
                        "size takes --input-shape C,H,W)")
    return OnnxModule(model), shape, model  # type: ignore[return-value]


def load_factory(spec: str, num_classes: int) -> nn.Module:
    """``file.py:factory`` → ``factory(num_classes=...)`` (or ``factory()``)."""
    path, _, name = spec.rpartition(":")
    if not path.endswith(".py") or not name:
        raise PimcError(f"--model {spec}: expected FILE.py:FACTORY")
    if not Path(path).is_file():
        raise PimcError(f"--model {spec}: no such file {path}")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    factory = getattr(module, name, None)
    if not callable(factory):
        raise PimcError(f"--model {spec}: {path} has no callable {name}")
    takes = "num_classes" in inspect.signature(factory).parameters
    model = factory(num_classes=num_classes) if takes else factory()
    if not isinstance(model, nn.Module):
        raise PimcError(f"--model {spec}: {name}() did not return a torch.nn.Module")
    return model


def rename_io(path: str | Path, source: onnx.ModelProto) -> None:
    """Give the exported file at ``path`` the input and output names of ``source``."""
    from ..compiler.modelio import write_model

    proto = onnx.load(str(path))
    rename_io_of(proto, source)
    write_model(proto, path)


def rename_io_of(proto: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Give ``proto`` (in memory) the input and output names of ``source``."""
    graph = proto.graph
    renames = {real_inputs(proto)[0].name: real_inputs(source)[0].name, graph.output[0].name: source.graph.output[0].name}
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def finish_output(path: Path, source: Any, reference: dict[str, float]) -> None:
    """One rewrite of a compressed output: the user's ONNX input/output names (when ``source`` is given)
    and the dense model's storage reference."""
    import onnx

    from ..compiler.modelio import write_model
    from ..compiler.storage import replace_reference

    proto = onnx.load(str(path))
    if source is not None:
        rename_io_of(proto, source)
    replace_reference(proto, reference)
    write_model(proto, path)
