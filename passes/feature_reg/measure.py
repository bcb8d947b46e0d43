"""Measuring an exported Feature Regularization file: conv-input zero fractions per level, its convs and
its level table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .config import LEVEL_INPUT, METADATA_KEY


def conv_input_zero_fractions(path: str | Path, x: np.ndarray, level: int | None = None,
                              batch: int = 128) -> dict[str, float]:
    """Per Conv node of the ONNX file: the fraction of exact zeros in its data input, on onnxruntime.

    Every Conv's input becomes a graph output of a copy of the model; ``level`` feeds ``sparsity_level``
    (None: the file's default). Keyed by the Conv node's name (its output name if it has none).
    """
    from ...compiler.sessions import open_session, session_options

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    outputs = {o.name for o in model.graph.output}
    for node in convs:
        if node.input[0] not in outputs:
            model.graph.output.append(helper.make_empty_tensor_value_info(node.input[0]))
            outputs.add(node.input[0])
    options = session_options()
    options.intra_op_num_threads = 1
    session = open_session(model, options)
    names = [n.input[0] for n in convs]
    zeros = np.zeros(len(names))
    total = np.zeros(len(names))
    data_name = session.get_inputs()[0].name
    for start in range(0, len(x), batch):
        feed = {data_name: np.asarray(x[start:start + batch], np.float32)}
        if level is not None:
            feed[LEVEL_INPUT] = np.array(level, np.int64)
        values = session.run(names, feed)
        for i, v in enumerate(values):
            zeros[i] += float(np.count_nonzero(v == 0))
            total[i] += v.size
    return {(n.name or n.output[0]): float(z / max(t, 1)) for n, z, t in zip(convs, zeros, total, strict=True)}


IMAGE_OPS = ("Sub", "Add", "Mul", "Div", "Identity", "Cast")  # a mean shift or a scale of the image


def image_convs(path: str | Path) -> list[str]:
    """Conv nodes (names, else output names) whose data input is a graph input, or made from one by
    elementwise ops with constants (a mean shift): the ungated first convs."""
    model = onnx.load(str(path), load_external_data=False)
    image = {i.name for i in model.graph.input if i.name != LEVEL_INPUT}
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                             for o in n.output}
    for node in model.graph.node:
        data = [i for i in node.input if i and i not in constants]
        if node.op_type in IMAGE_OPS and data and all(i in image for i in data):
            image.update(node.output)
    return [n.name or n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.input[0] in image]


def level_metadata(path: str | Path) -> dict | None:
    """The ``pimc.feature_reg`` metadata of an exported file (levels, default level), or None."""
    import json

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None
