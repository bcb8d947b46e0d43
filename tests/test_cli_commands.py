"""``pimc compile / inspect / passes / targets`` on a small model through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pimc.cli.main import main
from pimc.compiler import annotations as ann


def _model_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             [("w", (4, 2, 3, 3)), ("g", (4,)), ("b", (4,)), ("m", (4,))]]
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "v"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits,
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_compile_json_report_shape(tmp_path: Path, capsys):
    src = _model_file(tmp_path)
    out = tmp_path / "m.ort.onnx"
    assert main(["compile", str(src), "-t", "onnxruntime", "--verify", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"pimc_version", "input", "output", "target", "passes", "model", "verify", "cost"} <= set(report)
    for p in report["passes"]:
        assert {"name", "changed", "seconds", "nodes_before", "nodes_after", "params_before", "params_after",
                "max_abs_err", "max_rel_err"} <= set(p)
    assert {"params_before", "params", "nonzero_params", "macs_before", "macs", "effective_macs"} <= set(report["model"])
    assert report["verify"]["max_rel_err"] <= 1e-5 and report["cost"] is None
    assert report["model"]["macs"] == 4 * 4 * 4 * 2 * 9
    fold = next(p for p in report["passes"] if p["name"] == "fold-batchnorm")
    assert fold["changed"] and fold["nodes_before"]["BatchNormalization"] == 1
    assert "BatchNormalization" not in fold["nodes_after"]
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_compile_default_output_name(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _model_file(tmp_path)
    assert main(["compile", str(src), "-t", "onnxruntime"]) == 0
    assert "fold-batchnorm" in capsys.readouterr().out
    assert (tmp_path / "m.onnxruntime.onnx").exists()


def test_pipeline_toml_and_set(tmp_path: Path, capsys):
    src = _model_file(tmp_path)
    (tmp_path / "p.toml").write_text('passes = ["fold-batchnorm", "fuse-relu", "cleanup"]\n'
                                     "[options.fuse-relu]\nsamples = 2\n")
    out = tmp_path / "o.onnx"
    assert main(["compile", str(src), "-t", "onnxruntime", "--pipeline", str(tmp_path / "p.toml"),
                 "--set", "fuse-relu.measure=false", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in report["passes"]] == ["fold-batchnorm", "fuse-relu", "cleanup"]
    fuse = report["passes"][1]
    assert fuse["options"] == {"measure": False, "samples": 2}
    conv = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv")
    assert ann.get_node_annotation(conv, "fused_activation") == "Relu"
    assert ann.get_node_annotation(conv, "neg_fraction") is None


def test_inspect_shows_annotations(tmp_path: Path, capsys):
    src = _model_file(tmp_path)
    out = tmp_path / "o.onnx"
    assert main(["compile", str(src), "-t", "onnxruntime", "--passes", "fold-batchnorm,fuse-relu", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["opset"] == 17 and info["nodes"] == {"Conv": 1, "Relu": 1}
    notes = {n["name"]: n["annotations"] for n in info["node_annotations"]}
    assert notes["conv"]["fused_activation"] == "Relu" and notes["relu"]["fused_into"] == "conv"
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fused_activation" in text and "Conv×1" in text


def test_passes_and_targets_listing(capsys):
    assert main(["passes", "--json"]) == 0
    passes = json.loads(capsys.readouterr().out)
    assert {"fold-batchnorm", "fuse-relu", "eliminate-identity", "fold-constants", "cleanup"} <= set(passes)
    assert passes["fuse-relu"]["options"][0]["name"] == "measure" and passes["cleanup"]["exact"]
    assert main(["passes"]) == 0
    assert "fold-batchnorm" in capsys.readouterr().out
    assert main(["targets", "--json"]) == 0
    targets = json.loads(capsys.readouterr().out)
    assert targets["onnxruntime"]["pipeline"][0] == "fold-constants" and targets["onnxruntime"]["hardware"] == []
    assert main(["targets"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
