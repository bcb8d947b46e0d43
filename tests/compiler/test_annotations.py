"""Per-element maps: stored as model-local functions, read back losslessly (old layout too), and an
onnxruntime session on an annotated model prints nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from conftest import conv_bn_net
from onnx import numpy_helper

from pimc.compiler import annotations as ann
from pimc.compiler.loader import load_model


def _annotated() -> tuple[onnx.ModelProto, np.ndarray]:
    model = conv_bn_net()
    ids = np.arange(24, dtype=np.int16).reshape(8, 3)
    ann.set_node_map(model, model.graph.node[0], "pattern", ids)
    return model, ids


def test_map_round_trips_through_a_file(tmp_path: Path):
    model, ids = _annotated()
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = load_model(tmp_path / "m.onnx")
    got = ann.get_node_map(loaded, loaded.graph.node[0], "pattern")
    assert got.dtype == np.int16 and np.array_equal(got, ids)
    assert not any(i.name.startswith(ann.MAP_PREFIX) for i in loaded.graph.initializer)


def test_old_layout_is_read_and_migrated_on_load(tmp_path: Path):
    model = conv_bn_net()
    ids = np.ones((8, 3), np.int16)
    name = "pimc.map.pattern.conv1"
    model.graph.initializer.append(numpy_helper.from_array(ids, name))
    ann.set_node_annotation(model.graph.node[0], "maps", {"pattern": name})
    assert np.array_equal(ann.get_node_map(model, model.graph.node[0], "pattern"), ids)
    onnx.save(model, str(tmp_path / "old.onnx"))
    loaded = load_model(tmp_path / "old.onnx")
    assert name not in {i.name for i in loaded.graph.initializer}
    assert np.array_equal(ann.get_node_map(loaded, loaded.graph.node[0], "pattern"), ids)


def test_prune_maps_drops_unreferenced_ones():
    model, _ = _annotated()
    ann.remove_node_annotation(model.graph.node[0], "maps")
    assert ann.prune_maps(model) == ["pimc.map.pattern.conv1"] and not model.functions


def test_onnxruntime_session_on_annotated_model_is_silent(tmp_path: Path):
    model, _ = _annotated()
    path = tmp_path / "annotated.onnx"
    onnx.save(model, str(path))
    script = ("import onnxruntime as ort, sys\n"
              f"ort.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider'])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == ""


def test_maps_survive_opset_changes_and_conversion():
    """The map functions import no operator set, so raising the opset keeps the model valid, and
    ``carry_annotations`` restores maps and node annotations after onnx's version converter drops them."""
    from onnx import version_converter

    model, ids = _annotated()
    model.opset_import[0].version = 19
    onnx.checker.check_model(model, full_check=True)
    old = conv_bn_net(opset=11)
    ann.set_node_map(old, old.graph.node[0], "pattern", ids)
    converted = ann.carry_annotations(old, version_converter.convert_version(old, 13))
    onnx.checker.check_model(converted, full_check=True)
    assert np.array_equal(ann.get_node_map(converted, converted.graph.node[0], "pattern"), ids)
