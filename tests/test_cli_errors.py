"""Malformed inputs and options: each gives ONE line on stderr, a non-zero exit, no traceback and no
output file; ``--debug`` shows the traceback instead."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.cli.main import main
from pimc.compiler.target import all_targets


def _conv_model(opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _write(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _good(tmp: Path) -> Path:
    return _write(_conv_model(), tmp / "good.onnx")


def _missing(tmp):
    return [str(tmp / "nope.onnx"), "-t", "onnxruntime"]


def _directory(tmp):
    (tmp / "adir.onnx").mkdir()
    return [str(tmp / "adir.onnx"), "-t", "onnxruntime"]


def _empty(tmp):
    (tmp / "empty.onnx").write_bytes(b"")
    return [str(tmp / "empty.onnx"), "-t", "onnxruntime"]


def _random_bytes(tmp):
    (tmp / "rand.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return [str(tmp / "rand.onnx"), "-t", "onnxruntime"]


def _truncated(tmp):
    data = _conv_model().SerializeToString()
    (tmp / "trunc.onnx").write_bytes(data[: len(data) // 2])
    return [str(tmp / "trunc.onnx"), "-t", "onnxruntime"]


def _text(tmp):
    (tmp / "model.onnx").write_text("this is not a model\njust some text\n")
    return [str(tmp / "model.onnx"), "-t", "onnxruntime"]


def _cycle(tmp):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="relu"),
         helper.make_node("Relu", ["a"], ["y"], name="out")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    path = _write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp / "cycle.onnx")
    return [str(path), "-t", "onnxruntime"]


def _missing_initializer(tmp):
    model = _conv_model()
    del model.graph.initializer[:]
    return [str(_write(model, tmp / "noinit.onnx")), "-t", "onnxruntime"]


def _opset_too_new(tmp):
    return [str(_write(_conv_model(opset=30), tmp / "new.onnx")), "-t", "onnxruntime"]


def _no_default_opset(tmp):
    model = _conv_model()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return [str(_write(model, tmp / "noopset.onnx")), "-t", "onnxruntime"]


def _dynamic_weight(tmp):
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    path = _write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp / "dyn.onnx")
    return [str(path), "-t", "onnxruntime"]


def _input_without_shape(tmp):
    model = _conv_model()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    return [str(_write(model, tmp / "noshape.onnx")), "-t", "onnxruntime"]


def _duplicate_output_name(tmp):
    model = _conv_model()
    model.graph.node[1].output[0] = "c"
    model.graph.output[0].name = "c"
    return [str(_write(model, tmp / "ssa.onnx")), "-t", "onnxruntime"]


def _unknown_target(tmp):
    return [str(_good(tmp)), "-t", "tpu-v9"]


def _unknown_pass(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", "cleanup,make-it-fast"]


def _empty_pass_list(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", " , "]


def _unknown_option(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", "fuse-relu", "--set", "fuse-relu.turbo=1"]


def _bad_option_value(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", "fuse-relu", "--set", "fuse-relu.samples=many"]


def _option_below_minimum(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", "fuse-relu", "--set", "fuse-relu.samples=0"]


def _malformed_set(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--set", "fuse-relu-samples"]


def _option_for_pass_not_in_pipeline(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--passes", "cleanup", "--set", "fuse-relu.samples=3"]


def _bad_pipeline_toml(tmp):
    (tmp / "pipe.toml").write_text("passes = [cleanup\n")
    return [str(_good(tmp)), "-t", "onnxruntime", "--pipeline", str(tmp / "pipe.toml")]


def _pipeline_unknown_key(tmp):
    (tmp / "pipe.toml").write_text('passes = ["cleanup"]\nspeed = "ludicrous"\n')
    return [str(_good(tmp)), "-t", "onnxruntime", "--pipeline", str(tmp / "pipe.toml")]


def _hw_target() -> str:
    return next(name for name, cls in all_targets().items() if cls.config_cls is not None)


def _bad_hw_file(tmp):
    (tmp / "hw.toml").write_text("rows = = 3\n")
    return [str(_good(tmp)), "-t", _hw_target(), "--hw", str(tmp / "hw.toml")]


def _missing_hw_file(tmp):
    return [str(_good(tmp)), "-t", _hw_target(), "--hw", str(tmp / "nohw.toml")]


def _unknown_hw_key(tmp):
    (tmp / "hw.toml").write_text("warp_drive = 1\n")
    return [str(_good(tmp)), "-t", _hw_target(), "--hw", str(tmp / "hw.toml")]


def _hw_for_target_without_hw(tmp):
    (tmp / "hw.toml").write_text("rows = 3\n")
    return [str(_good(tmp)), "-t", "onnxruntime", "--hw", str(tmp / "hw.toml")]


def _output_folder_missing(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "-o", str(tmp / "no" / "such" / "out.onnx")]


def _output_is_directory(tmp):
    (tmp / "outdir").mkdir()
    return [str(_good(tmp)), "-t", "onnxruntime", "-o", str(tmp / "outdir")]


def _output_unwritable(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "-o", "/proc/pimc-test-out.onnx"]


def _output_is_input(tmp):
    good = _good(tmp)
    return [str(good), "-t", "onnxruntime", "-o", str(good)]


def _report_folder_missing(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--report", str(tmp / "none" / "r.json")]


def _unknown_cli_option(tmp):
    return [str(_good(tmp)), "-t", "onnxruntime", "--optimise-harder"]


CASES: dict[str, Callable[[Path], list[str]]] = {f.__name__.lstrip("_"): f for f in [
    _missing, _directory, _empty, _random_bytes, _truncated, _text, _cycle, _missing_initializer,
    _opset_too_new, _no_default_opset, _dynamic_weight, _input_without_shape, _duplicate_output_name,
    _unknown_target, _unknown_pass, _empty_pass_list, _unknown_option, _bad_option_value,
    _option_below_minimum, _malformed_set, _option_for_pass_not_in_pipeline, _bad_pipeline_toml,
    _pipeline_unknown_key, _bad_hw_file, _missing_hw_file, _unknown_hw_key, _hw_for_target_without_hw,
    _output_folder_missing, _output_is_directory, _output_unwritable, _output_is_input,
    _report_folder_missing, _unknown_cli_option,
]}

EXPECTED = {
    "missing": "no such file", "directory": "is a directory", "empty": "empty", "random_bytes": "not a valid ONNX",
    "truncated": "not a valid ONNX", "text": "not a valid ONNX", "cycle": "cycle",
    "missing_initializer": "'w'", "opset_too_new": "opset 30", "no_default_opset": "opset",
    "dynamic_weight": "dynamic weight", "input_without_shape": "no tensor type with a shape",
    "duplicate_output_name": "invalid model", "unknown_target": "unknown target", "unknown_pass": "make-it-fast",
    "empty_pass_list": "--passes", "unknown_option": "turbo", "bad_option_value": "expected int",
    "option_below_minimum": "minimum", "malformed_set": "PASS.OPTION=VALUE", "option_for_pass_not_in_pipeline":
    "not in the pipeline", "bad_pipeline_toml": "TOML", "pipeline_unknown_key": "speed",
    "bad_hw_file": "cannot parse", "missing_hw_file": "no such hardware config", "unknown_hw_key": "warp_drive",
    "hw_for_target_without_hw": "no hardware parameters", "output_folder_missing": "does not exist",
    "output_is_directory": "directory", "output_unwritable": "cannot write", "output_is_input": "overwrite",
    "report_folder_missing": "does not exist", "unknown_cli_option": "optimise-harder",
}


def test_at_least_twenty_cases():
    assert len(CASES) >= 20 and set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_is_one_clean_line(case: str, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = CASES[case](tmp_path)
    before = {p.name for p in tmp_path.rglob("*")}
    if "-o" not in args:
        args += ["-o", str(tmp_path / "result.onnx")]
    code = main(["compile", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("pimc: error: ") and "internal error" not in lines[0]
    assert "Traceback" not in err
    assert EXPECTED[case].lower() in lines[0].lower(), lines[0]
    after = {p.name for p in tmp_path.rglob("*")}
    assert after == before, f"left files behind: {after - before}"
    assert not (tmp_path / "result.onnx").exists() and not Path("/proc/pimc-test-out.onnx").exists()


def test_debug_shows_traceback(tmp_path: Path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "pimc.cli.main", "--debug", "compile", str(tmp_path / "nope.onnx"),
         "-t", "onnxruntime"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "no such file" in result.stderr


def _console_script() -> str:
    """The ``pimc`` script installed beside this interpreter (a venv's bin/ need not be on PATH)."""
    script = Path(sys.executable).parent / "pimc"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (package not installed with pip)")
    return str(script)


def test_console_script_exit_code(tmp_path: Path):
    result = subprocess.run([_console_script(), "compile", str(tmp_path / "nope.onnx"), "-t", "onnxruntime"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_python_dash_m_pimc(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "pimc", "compile", str(tmp_path / "nope.onnx"), "-t",
                             "onnxruntime"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == f"pimc: error: {tmp_path / 'nope.onnx'}: no such file\n"
