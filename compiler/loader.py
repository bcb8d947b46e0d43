"""Loading and normalising ONNX: validation, node naming, constant folding, shape inference.

Accepts opsets 7 to 25 (torch legacy and dynamo exports, model-zoo graphs whose weights come from
Constant / ConstantOfShape / Identity chains, external-data files). Older models (opsets 1-6, e.g. the
pytorch-converted cases shipped with onnx) are upgraded to opset 7 with onnx's version converter first.
25 is the highest opset torch 2.13's exporter emits natively; onnx 1.23 and onnxruntime 1.32 run it.
Before the checker runs, references are resolved (a tensor nobody produces is named), the nodes are
sorted topologically (a cycle is named) and graph outputs without a type/shape get the inferred one.
IR 3 files (every initializer also a graph input) are raised to IR 4 without those inputs. After
folding, shape inference runs in strict mode and ``validate`` checks weights (NaN/inf, BatchNorm
variance) and Conv geometry, each failure one line naming the node or tensor.
Nodes pimc does not rewrite pass through untouched.
"""

from __future__ import annotations

import os

import onnx
from onnx import numpy_helper

from .annotations import MAP_DOMAIN, carry_annotations, migrate_legacy_maps
from .errors import PimcError
from .folding import fold_constants
from .graph import cycle_nodes, opset_version, producers, real_inputs, sort_nodes
from .modelio import read_model_bytes, serialize_model
from .validate import validate_model

MIN_OPSET = 7
MAX_OPSET = 25
UPGRADABLE_OPSET = 1


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read, validate and normalise a model file; every problem is a one-line PimcError."""
    model, data = read_model_bytes(path)
    return normalize(model, str(path), data)


def normalize(model: onnx.ModelProto, source: str = "model", data: bytes | None = None) -> onnx.ModelProto:
    """Validate and normalise in place (returns the model, a new one if its opset was upgraded).

    ``data``: the model's serialized bytes if known (the checker then skips serializing it again).
    """
    upgraded = _check_opset(model, source)
    if upgraded is not model:
        model, data = upgraded, None
    if _separate_initializers_from_inputs(model) | migrate_legacy_maps(model):
        data = None
    _check_references(model, source)
    if _sort_nodes(model, source) or _complete_io_types(model, source):
        data = None
    _check_structure(model, source, data)
    name_nodes(model)
    fold_constants(model)
    model = infer_shapes(model, source, strict=True)
    if fold_constants(model):  # Shape of static tensors needs the inferred shapes
        model = infer_shapes(model, source, strict=True)
    validate_model(model, source)
    _check_conv_weights(model, source)
    return model


def _check_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    version = opset_version(model)
    if version == 0:
        raise PimcError(f"{source}: no default-domain opset in opset_import")
    if UPGRADABLE_OPSET <= version < MIN_OPSET:
        return _upgrade(model, version, source)
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise PimcError(
            f"{source}: opset {version} is not supported "
            f"(pimc handles opsets {MIN_OPSET}-{MAX_OPSET}, and upgrades {UPGRADABLE_OPSET}-{MIN_OPSET - 1})"
        )
    return model


def _upgrade(model: onnx.ModelProto, version: int, source: str) -> onnx.ModelProto:
    from onnx import version_converter

    if model.ir_version < 4:  # IR 3 lists every initializer as a graph input; the converter relies on it
        listed = {i.name for i in model.graph.input}
        for init in model.graph.initializer:
            if init.name not in listed:
                model.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    try:
        return carry_annotations(model, version_converter.convert_version(model, MIN_OPSET))
    except Exception as exc:
        raise PimcError(
            f"{source}: opset {version} cannot be upgraded to {MIN_OPSET}: {_first_line(str(exc))}"
        ) from None


MIN_IR_SEPARATE_INITIALIZERS = 4


def _separate_initializers_from_inputs(model: onnx.ModelProto) -> bool:
    """IR 3 files list every initializer as a graph input too (and IR >= 4 exports may, e.g. torch's
    ``keep_initializers_as_inputs=True``). pimc treats initializers as constants, so such inputs are not
    fed: drop them, keeping the real inputs, and raise the IR version to 4, which lets initializers stand
    alone (passes add initializers without listing them). An IR >= 4 file that lists only some of its
    initializers as inputs declares those as optional inputs with a default value (e.g. feature-reg's
    ``sparsity_level``): they are kept, and never folded as constants. True if the model changed."""
    changed = False
    legacy = model.ir_version < MIN_IR_SEPARATE_INITIALIZERS
    if legacy:
        model.ir_version = MIN_IR_SEPARATE_INITIALIZERS
        changed = True
    inits = {init.name for init in model.graph.initializer}
    listed = {vi.name for vi in model.graph.input} & inits
    if listed and (legacy or listed == inits):
        keep = [vi for vi in model.graph.input if vi.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        changed = True
    return changed


def _check_references(model: onnx.ModelProto, source: str) -> None:
    """Every tensor a node reads exists: a graph input, an initializer or another node's output."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    available |= {i.name for i in graph.sparse_initializer}
    available |= {o for n in graph.node for o in n.output if o}
    for k, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in available:
                label = node.name or f"#{k} ({node.op_type})"
                raise PimcError(
                    f"{source}: node '{label}' reads '{name}', which no node, initializer or graph input provides"
                )
    for out in graph.output:
        if out.name not in available:
            raise PimcError(f"{source}: graph output '{out.name}' is not produced by any node or input")


def _sort_nodes(model: onnx.ModelProto, source: str) -> bool:
    changed = sort_nodes(model.graph)
    if changed is None:
        names = cycle_nodes(model.graph)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise PimcError(f"{source}: the graph has a cycle (nodes {shown})")
    return changed


def _complete_io_types(model: onnx.ModelProto, source: str) -> bool:
    """Graph outputs may lack a type or shape (onnxruntime accepts that, the checker does not): fill them
    from shape inference. Graph inputs must say their type and rank."""
    graph = model.graph
    for vi in real_inputs(model):
        if not _has_tensor_shape(vi):
            raise PimcError(f"{source}: graph input '{vi.name}' has no tensor type with a shape")
    missing = [o.name for o in graph.output if not _has_tensor_shape(o)]
    if not missing:
        return False
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), strict_mode=False)
    except Exception as exc:
        raise PimcError(f"{source}: shape inference failed: {_first_line(str(exc))}") from None
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in graph.output:
        if _has_tensor_shape(out):
            continue
        found = known.get(out.name)
        if found is None or not _has_tensor_shape(found):
            raise PimcError(f"{source}: graph output '{out.name}' has no shape and shape inference cannot find one")
        out.type.CopyFrom(found.type)
    return True


def _has_tensor_shape(vi: onnx.ValueInfoProto) -> bool:
    if vi.type.HasField("tensor_type"):
        t = vi.type.tensor_type
        return t.elem_type != onnx.TensorProto.UNDEFINED and t.HasField("shape")
    return vi.type.WhichOneof("value") is not None


def _check_structure(model: onnx.ModelProto, source: str, data: bytes | None = None) -> None:
    """``onnx.checker.check_model`` on the model's bytes; above 2 GB, on its skeleton plus a size check
    of every weight (the checker cannot take such a proto in memory)."""
    data = data if data is not None else serialize_model(model)
    try:
        if data is not None:
            onnx.checker.check_model(data)
        else:
            onnx.checker.check_model(_skeleton(model))
            _check_tensor_sizes(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise PimcError(f"{source}: invalid model: {_first_line(str(exc))}") from exc


def _check_tensor_sizes(model: onnx.ModelProto) -> None:
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL or not init.HasField("raw_data"):
            continue
        try:
            numpy_helper.to_array(init)
        except Exception as exc:
            raise onnx.checker.ValidationError(f"initializer '{init.name}': {_first_line(str(exc))}") from None


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


def infer_shapes(model: onnx.ModelProto, source: str = "model", strict: bool = False) -> onnx.ModelProto:
    """Fresh shape inference (stale value_info is dropped first), in place; returns ``model``.

    ``strict`` (on load): any inference or type error, e.g. inputs whose types an op rejects, fails.

    Inference runs on a skeleton of the model: large weights are declared as typed graph inputs instead
    of being copied, so neither their bytes nor the 2 GB protobuf limit matter. Integer tensors up to
    ``_SKELETON_KEEP_INT`` elements and every tensor up to ``_SKELETON_KEEP`` elements keep their values
    (Reshape targets, Slice bounds, ... feed data propagation), so the result equals inference on the
    whole model.
    """
    del model.graph.value_info[:]
    skeleton = _skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=strict, strict_mode=strict,
                                                     data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise PimcError(f"{source}: shape inference failed: {_first_line(str(exc))}") from None
    graph = model.graph
    graph.value_info.extend(inferred.graph.value_info)
    for out, new in zip(graph.output, inferred.graph.output, strict=True):
        if new.type.WhichOneof("value") is not None:
            out.type.CopyFrom(new.type)
    if any(_has_subgraph(n) for n in graph.node):
        del graph.node[:]
        graph.node.extend(inferred.graph.node)
    return model


_SKELETON_KEEP = 1024
_SKELETON_KEEP_INT = 2**16
_INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(f for f in model.functions if f.domain != MAP_DOMAIN)  # maps: data only
    src, dst = model.graph, skeleton.graph
    dst.name = src.name
    dst.node.extend(src.node)
    dst.input.extend(src.input)
    dst.output.extend(src.output)
    dst.sparse_initializer.extend(src.sparse_initializer)
    listed = {i.name for i in src.input}
    for init in src.initializer:
        if _keep_value(init):
            dst.initializer.append(init)
        elif init.name not in listed:
            dst.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def _keep_value(init: onnx.TensorProto) -> bool:
    size = 1
    for d in init.dims:
        size *= d
    return size <= _SKELETON_KEEP or (init.data_type in _INT_TYPES and size <= _SKELETON_KEEP_INT)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


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
