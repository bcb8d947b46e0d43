"""Loading and normalising ONNX: validation, node naming, constant folding, shape inference.

Accepts opsets 7 to 22 (torch legacy and dynamo exports, model-zoo graphs whose weights come from
Constant / ConstantOfShape / Identity chains, external-data files). Nodes pimc does not rewrite pass
through untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from .errors import PimcError
from .folding import fold_constants
from .graph import opset_version, producers
from .modelio import TWO_GB, copy_model, read_model

MIN_OPSET = 7
MAX_OPSET = 22


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read, validate and normalise a model file; every problem is a one-line PimcError."""
    return normalize(read_model(path), str(path))


def normalize(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    _check_opset(model, source)
    _check_structure(model, source)
    name_nodes(model)
    fold_constants(model)
    model = infer_shapes(model, source)
    _check_conv_weights(model, source)
    return model


def _check_opset(model: onnx.ModelProto, source: str) -> None:
    version = opset_version(model)
    if version == 0:
        raise PimcError(f"{source}: no default-domain opset in opset_import")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise PimcError(f"{source}: opset {version} is not supported (pimc handles opsets {MIN_OPSET}-{MAX_OPSET})")


def _check_structure(model: onnx.ModelProto, source: str) -> None:
    try:
        if model.ByteSize() < TWO_GB:
            onnx.checker.check_model(model)
        else:
            _check_large(model)
    except onnx.checker.ValidationError as exc:
        raise PimcError(f"{source}: invalid model: {_first_line(str(exc))}") from exc
    except ValueError as exc:  # ByteSize on > 2 GB protos
        if "2GB" in str(exc) or "2 GB" in str(exc):
            _check_large(model)
        else:
            raise PimcError(f"{source}: invalid model: {_first_line(str(exc))}") from exc


def _check_large(model: onnx.ModelProto) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save_model(copy_model(model), str(path), save_as_external_data=True, location="m.data")
        onnx.checker.check_model(str(path))


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique, deterministic name (passes and annotations refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def infer_shapes(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Fresh shape inference (stale value_info is dropped first). Large models are inferred by path."""
    del model.graph.value_info[:]
    try:
        if model.ByteSize() < TWO_GB:
            return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except ValueError:
        pass
    except onnx.shape_inference.InferenceError as exc:
        raise PimcError(f"{source}: shape inference failed: {_first_line(str(exc))}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(copy_model(model), str(src), save_as_external_data=True, location="in.data")
        onnx.shape_inference.infer_shapes_path(str(src), str(dst))
        inferred = onnx.load(str(dst), load_external_data=False)
        onnx.load_external_data_for_model(inferred, tmp)
        return inferred


def _check_conv_weights(model: onnx.ModelProto, source: str) -> None:
    from .workload import constant_value

    prods = producers(model.graph)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            if constant_value(model, node.input[1], inits, prods) is None:
                raise PimcError(
                    f"{source}: Conv '{node.name}' has a dynamic weight input '{node.input[1]}'; "
                    "pimc compiles convolutions with constant weights only"
                )
