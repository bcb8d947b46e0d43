"""Reading and writing pimc's compression decisions inside standard ONNX fields.

Three places, all of which survive ``onnx.save``/``onnx.load`` and are ignored by onnxruntime:

* node ``metadata_props`` with keys ``pimc.<key>``; values are JSON text (numbers, strings, lists, dicts);
* ``graph.quantization_annotation``: per-tensor data types (``pimc.dtype``, ``pimc.bits``, ...), the place
  qonnx keeps ``finn_datatype``;
* per-element maps (pattern ids, per-block bit widths) as model-local functions in ``model.functions``:
  the map ``pimc.map.<kind>.<node>`` is the FunctionProto of domain ``pimc.map`` and name
  ``<kind>.<node>`` with no inputs, outputs or nodes, whose attribute ``value`` holds the tensor as its
  default (``FunctionProto.attribute_proto``, IR 9). A node names its maps in a ``pimc.maps`` annotation
  (cleanup drops maps nobody names).

Why functions: they are standard ONNX (the checker accepts them), lossless, independent of the model's
opset (the body imports no operator), and a runtime ignores functions no node calls. onnxruntime, in particular, loads them silently, whereas an initializer
no node reads (the layout before: initializers named ``pimc.map.*``) makes it warn "Removing initializer
..." on every session, and a sparse initializer is densified and warned about the same way.
``training_info`` would be silent too, but it describes training, which maps are not. The old layout is
still read, and ``migrate_legacy_maps`` (run on load) moves it into functions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

PREFIX = "pimc."
MAP_PREFIX = "pimc.map."


def _key(key: str) -> str:
    return key if key.startswith(PREFIX) else PREFIX + key


def set_node_annotation(node: onnx.NodeProto, key: str, value: Any) -> None:
    """Set ``pimc.<key>`` on a node, replacing an earlier value."""
    full = _key(key)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    for prop in node.metadata_props:
        if prop.key == full:
            prop.value = text
            return
    node.metadata_props.add(key=full, value=text)


def get_node_annotation(node: onnx.NodeProto, key: str, default: Any = None) -> Any:
    full = _key(key)
    for prop in node.metadata_props:
        if prop.key == full:
            return _decode(prop.value)
    return default


def node_annotations(node: onnx.NodeProto) -> dict[str, Any]:
    """All pimc annotations of a node, keyed without the prefix."""
    return {p.key[len(PREFIX):]: _decode(p.value) for p in node.metadata_props if p.key.startswith(PREFIX)}


def remove_node_annotation(node: onnx.NodeProto, key: str) -> None:
    full = _key(key)
    keep = [(p.key, p.value) for p in node.metadata_props if p.key != full]
    del node.metadata_props[:]
    for k, v in keep:
        node.metadata_props.add(key=k, value=v)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_tensor_annotation(model: onnx.ModelProto, tensor: str, key: str, value: Any) -> None:
    """Set ``pimc.<key>`` for a tensor in ``graph.quantization_annotation``."""
    full = _key(key)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    entry = _tensor_entry(model, tensor, create=True)
    for kv in entry.quant_parameter_tensor_names:
        if kv.key == full:
            kv.value = text
            return
    entry.quant_parameter_tensor_names.add(key=full, value=text)


def get_tensor_annotation(model: onnx.ModelProto, tensor: str, key: str, default: Any = None) -> Any:
    entry = _tensor_entry(model, tensor, create=False)
    if entry is None:
        return default
    full = _key(key)
    for kv in entry.quant_parameter_tensor_names:
        if kv.key == full:
            return _decode(kv.value)
    return default


def tensor_annotations(model: onnx.ModelProto) -> dict[str, dict[str, Any]]:
    """Every tensor's pimc annotations: ``{tensor: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for entry in model.graph.quantization_annotation:
        values = {
            kv.key[len(PREFIX):]: _decode(kv.value)
            for kv in entry.quant_parameter_tensor_names
            if kv.key.startswith(PREFIX)
        }
        if values:
            out.setdefault(entry.tensor_name, {}).update(values)
    return out


def _tensor_entry(model: onnx.ModelProto, tensor: str, create: bool):
    for entry in model.graph.quantization_annotation:
        if entry.tensor_name == tensor:
            return entry
    if not create:
        return None
    entry = model.graph.quantization_annotation.add()
    entry.tensor_name = tensor
    return entry


MAP_DOMAIN = "pimc.map"
MAP_VALUE = "value"
MIN_IR_FUNCTION_ATTRIBUTES = 9


def set_node_map(model: onnx.ModelProto, node: onnx.NodeProto, kind: str, array: np.ndarray) -> str:
    """Store a per-element map for ``node`` and reference it from the node.

    Returns the map name ``pimc.map.<kind>.<node name>``.
    """
    name = f"{MAP_PREFIX}{kind}.{node.name}"
    store_map(model, name, array)
    maps = dict(get_node_annotation(node, "maps", {}) or {})
    maps[kind] = name
    set_node_annotation(node, "maps", maps)
    return name


def store_map(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    """Write (or replace) the map ``name`` as a model-local function; drops an old-layout initializer."""
    function = _map_function(name, np.asarray(array, order="C"))
    for i, existing in enumerate(model.functions):
        if _is_map(existing, name):
            model.functions[i].CopyFrom(function)
            break
    else:
        model.functions.append(function)
    _remove_legacy_map(model, name)
    model.ir_version = max(model.ir_version, MIN_IR_FUNCTION_ATTRIBUTES)


def _map_function(name: str, array: np.ndarray) -> onnx.FunctionProto:
    function = onnx.FunctionProto()
    function.domain, function.name = MAP_DOMAIN, name[len(MAP_PREFIX):]
    function.attribute_proto.append(helper.make_attribute(MAP_VALUE, numpy_helper.from_array(array, MAP_VALUE)))
    return function


def _is_map(function: onnx.FunctionProto, name: str | None = None) -> bool:
    if function.domain != MAP_DOMAIN:
        return False
    return name is None or MAP_PREFIX + function.name == name


def map_names(model: onnx.ModelProto) -> list[str]:
    """Every stored map (both layouts)."""
    names = [MAP_PREFIX + f.name for f in model.functions if _is_map(f)]
    return names + [init.name for init in model.graph.initializer if init.name.startswith(MAP_PREFIX)]


def get_map(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """The map stored under ``name`` (a function, or an old-layout initializer), or None."""
    for function in model.functions:
        if _is_map(function, name):
            return numpy_helper.to_array(function.attribute_proto[0].t)
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def get_node_map(model: onnx.ModelProto, node: onnx.NodeProto, kind: str) -> np.ndarray | None:
    name = (get_node_annotation(node, "maps", {}) or {}).get(kind)
    return None if name is None else get_map(model, name)


def referenced_map_names(model: onnx.ModelProto) -> set[str]:
    """Names of every map some node references (cleanup must keep them)."""
    names: set[str] = set()
    for node in model.graph.node:
        names.update((get_node_annotation(node, "maps", {}) or {}).values())
    return names


def prune_maps(model: onnx.ModelProto) -> list[str]:
    """Remove the map functions no node references; returns their names."""
    used = referenced_map_names(model)
    dropped = [MAP_PREFIX + f.name for f in model.functions if _is_map(f) and MAP_PREFIX + f.name not in used]
    if dropped:
        keep = [f for f in model.functions if not (_is_map(f) and MAP_PREFIX + f.name not in used)]
        del model.functions[:]
        model.functions.extend(keep)
    return sorted(dropped)


def migrate_legacy_maps(model: onnx.ModelProto) -> bool:
    """Move old-layout maps (initializers named ``pimc.map.*`` that no node reads) into functions."""
    read = {name for node in model.graph.node for name in node.input}
    legacy = [init for init in model.graph.initializer if init.name.startswith(MAP_PREFIX) and init.name not in read]
    for init in legacy:
        store_map(model, init.name, numpy_helper.to_array(init))
    return bool(legacy)


def carry_annotations(source: onnx.ModelProto, target: onnx.ModelProto) -> onnx.ModelProto:
    """Copy ``source``'s pimc annotations into ``target`` (a converted copy of it) where they were lost:
    onnx's version converter drops model-local functions (the maps) and node ``metadata_props``. Nodes
    are matched by name; returns ``target``."""
    present = {(f.domain, f.name) for f in target.functions}
    missing = [f for f in source.functions if _is_map(f) and (f.domain, f.name) not in present]
    if missing:
        target.functions.extend(missing)
        target.ir_version = max(target.ir_version, MIN_IR_FUNCTION_ATTRIBUTES)
    notes = {n.name: n.metadata_props for n in source.graph.node if n.name and n.metadata_props}
    for node in target.graph.node:
        if node.name in notes and not node.metadata_props:
            node.metadata_props.extend(notes[node.name])
    if source.graph.quantization_annotation and not target.graph.quantization_annotation:
        target.graph.quantization_annotation.extend(source.graph.quantization_annotation)
    return target


def _remove_legacy_map(model: onnx.ModelProto, name: str) -> None:
    inits = model.graph.initializer
    for i, init in enumerate(inits):
        if init.name == name:
            del inits[i]
            return
