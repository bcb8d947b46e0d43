"""Reading and writing pimc's compression decisions inside standard ONNX fields.

Three places, all of which survive ``onnx.save``/``onnx.load`` and are ignored by onnxruntime:

* node ``metadata_props`` with keys ``pimc.<key>``; values are JSON text (numbers, strings, lists, dicts);
* ``graph.quantization_annotation``: per-tensor data types (``pimc.dtype``, ``pimc.bits``, ...), the place
  qonnx keeps ``finn_datatype``;
* initializers named ``pimc.map.<...>`` for per-element maps (pattern ids, per-block bit widths). A node
  names its maps in a ``pimc.maps`` annotation, so cleanup keeps them alive.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

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


def set_node_map(model: onnx.ModelProto, node: onnx.NodeProto, kind: str, array: np.ndarray) -> str:
    """Store a per-element map for ``node`` as an initializer and reference it from the node.

    Returns the initializer name ``pimc.map.<kind>.<node name>``.
    """
    name = f"{MAP_PREFIX}{kind}.{node.name}"
    tensor = numpy_helper.from_array(np.asarray(array, order="C"), name)
    inits = model.graph.initializer
    for i, init in enumerate(inits):
        if init.name == name:
            inits[i].CopyFrom(tensor)
            break
    else:
        inits.append(tensor)
    maps = dict(get_node_annotation(node, "maps", {}) or {})
    maps[kind] = name
    set_node_annotation(node, "maps", maps)
    return name


def get_node_map(model: onnx.ModelProto, node: onnx.NodeProto, kind: str) -> np.ndarray | None:
    name = (get_node_annotation(node, "maps", {}) or {}).get(kind)
    if name is None:
        return None
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def referenced_map_names(model: onnx.ModelProto) -> set[str]:
    """Initializer names of every map some node references (cleanup must keep them)."""
    names: set[str] = set()
    for node in model.graph.node:
        names.update((get_node_annotation(node, "maps", {}) or {}).values())
    return names
