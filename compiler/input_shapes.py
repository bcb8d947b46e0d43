"""Fixing symbolic input dims: ``--input-shape NAME=1x3x224x224`` and the static-shape check of simulators.

``fix_input_shapes`` writes each given shape into its graph input (every dim, symbolic or not, must be
given; a given dim may only change a symbolic one) and re-infers the shapes of the whole graph.
``static_shape_assumptions`` is what a simulator target asks before costing: a symbolic channel or
spatial dim of a real input is an error naming the ``--input-shape`` to give; a symbolic batch dim alone
is costed as batch 1, which the returned assumption says, and so is every compute layer whose shapes
stay symbolic after inference (e.g. behind a Resize whose sizes are a runtime input): costed with those
dims taken as 1.
"""

from __future__ import annotations

import onnx

from .errors import PimcError
from .graph import real_inputs, value_shapes
from .loader import infer_shapes
from .workload import COMPUTE_OPS


def parse_input_shape(spec: str) -> tuple[str, list[int]]:
    """``NAME=1x3x224x224`` → (``NAME``, [1, 3, 224, 224]); every dim a positive integer."""
    name, sep, dims = spec.rpartition("=")
    if not sep or not name or not dims:
        raise PimcError(f"--input-shape '{spec}': expected NAME=D1xD2x... (e.g. x=1x3x224x224)")
    try:
        shape = [int(d) for d in dims.lower().split("x")]
    except ValueError:
        raise PimcError(f"--input-shape '{spec}': dims must be integers separated by 'x'") from None
    if any(d <= 0 for d in shape):
        raise PimcError(f"--input-shape '{spec}': dims must be positive")
    return name, shape


def _dim_labels(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """Each dim as its value, its symbol, or None when it is unknown."""
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        else:
            out.append(d.dim_param or None)
    return out


def fix_input_shapes(model: onnx.ModelProto, specs: tuple[str, ...] | list[str]) -> onnx.ModelProto:
    """Write the shapes of ``specs`` into the graph inputs and re-infer shapes; returns the model."""
    if not specs:
        return model
    inputs = {vi.name: vi for vi in real_inputs(model)}
    for spec in specs:
        name, shape = parse_input_shape(spec)
        vi = inputs.get(name)
        if vi is None:
            raise PimcError(f"--input-shape '{spec}': the model has no input '{name}' "
                            f"(inputs: {', '.join(inputs) or 'none'})")
        _set_shape(vi, shape, spec)
    return infer_shapes(model, "model")


def _set_shape(vi: onnx.ValueInfoProto, shape: list[int], spec: str) -> None:
    current = _dim_labels(vi)
    if len(current) != len(shape):
        raise PimcError(f"--input-shape '{spec}': input '{vi.name}' has rank {len(current)}, "
                        f"not {len(shape)}")
    for i, (old, new) in enumerate(zip(current, shape, strict=True)):
        if isinstance(old, int) and old != new:
            raise PimcError(f"--input-shape '{spec}': dim {i} of input '{vi.name}' is fixed at {old}")
    dims = vi.type.tensor_type.shape.dim
    for d, new in zip(dims, shape, strict=True):
        d.Clear()
        d.dim_value = new


def static_shape_assumptions(model: onnx.ModelProto) -> list[str]:
    """For simulator targets: raise on symbolic non-batch dims of a real input; report symbolic batch."""
    notes = []
    for vi in real_inputs(model):
        dims = _dim_labels(vi)
        symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
        if any(i > 0 for i in symbolic):
            shown = ", ".join(_show(d) for d in dims)
            hint = "x".join("1" if i == 0 and i in symbolic else _show(d) for i, d in enumerate(dims))
            raise PimcError(f"input '{vi.name}' has symbolic dims [{shown}]; give --input-shape {vi.name}={hint}")
        if symbolic:
            notes.append(f"input '{vi.name}' has a symbolic batch dim {_show(dims[0])!s}: costed as batch 1 "
                         f"(give --input-shape to cost another batch)")
    return notes + _symbolic_layers(model)


def _symbolic_layers(model: onnx.ModelProto) -> list[str]:
    """Compute nodes with a symbolic non-batch dim on their activation input or output."""
    shapes = value_shapes(model)
    notes = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        for name in (node.input[0], node.output[0]):
            dims = shapes.get(name)
            if dims is not None and any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
                shown = ", ".join(_show(d) for d in dims)
                notes.append(f"{node.op_type} '{node.name}': '{name}' has symbolic dims [{shown}] after shape "
                             "inference; costed with them as 1")
                break
    return notes


def _show(d: int | str | None) -> str:
    return "?" if d is None or (isinstance(d, int) and d <= 0) else str(d)
