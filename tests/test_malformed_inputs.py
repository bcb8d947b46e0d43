"""Real-world malformed inputs, beyond ``test_cli_errors``: geometry, NaN/inf, special files,
hardware values, run options. Each refusal is exit != 0 and exactly one stderr line, no traceback, no
"internal error" and no file left behind; each success prints no error line. Most cases run in process;
a few run ``python -m pimc`` in a subprocess to see onnxruntime's own C++ log lines too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.cli.main import main

Args = list[str]


def _model(nodes, inits, x_shape, y_shape=None, opset: int = 17, elem=TensorProto.FLOAT, inputs=None):
    graph = helper.make_graph(
        nodes, "g", inputs or [helper.make_tensor_value_info("x", elem, x_shape)],
        [helper.make_tensor_value_info("y", elem, y_shape)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv(x_shape, w_shape, name: str = "conv3", **attrs) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal(w_shape).astype(np.float32)
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name=name, **attrs)],
                  [numpy_helper.from_array(w, "w")], x_shape)


def _save(model: onnx.ModelProto, path: Path) -> str:
    path.write_bytes(model.SerializeToString())
    return str(path)


def _good(tmp: Path) -> str:
    return _save(_conv([1, 2, 6, 6], [3, 2, 3, 3]), tmp / "good.onnx")


def _with_weight(values: np.ndarray) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((3, 2, 3, 3)).astype(np.float32)
    w.flat[: values.size] = values
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [numpy_helper.from_array(w, "w")],
                  [1, 2, 6, 6])


def _bn(var: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n)
              for n, v in (("g", np.ones(3)), ("b", np.zeros(3)), ("m", np.zeros(3)), ("v", var))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn1")]
    return _model(nodes, inits, [1, 2, 6, 6])


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


# --- compile: refusals -----------------------------------------------------------------------------

def _conv_channels_mismatch(tmp) -> Args:
    return [_save(_conv([1, 3, 8, 8], [2, 4, 3, 3]), tmp / "model.onnx"), "-t", "onnxruntime"]


def _conv_kernel_larger_than_input(tmp) -> Args:
    return [_save(_conv([1, 3, 4, 4], [2, 3, 7, 7]), tmp / "model.onnx"), "-t", "escalate"]


def _conv_dilated_kernel_larger_than_input(tmp) -> Args:
    return [_save(_conv([1, 3, 5, 5], [2, 3, 3, 3], dilations=[3, 3]), tmp / "model.onnx"), "-t", "cim"]


def _conv_group_not_dividing_channels(tmp) -> Args:
    return [_save(_conv([1, 6, 8, 8], [4, 3, 3, 3], group=4), tmp / "model.onnx"), "-t", "onnxruntime"]


def _conv_group_not_dividing_outputs(tmp) -> Args:
    return [_save(_conv([1, 6, 8, 8], [3, 3, 3, 3], group=2), tmp / "model.onnx"), "-t", "onnxruntime"]


def _type_mismatch(tmp) -> Args:
    model = _model([helper.make_node("Add", ["x", "k"], ["y"], name="add")],
                   [numpy_helper.from_array(np.ones((1, 2), np.int64), "k")], [1, 2], [1, 2])
    return [_save(model, tmp / "model.onnx"), "-t", "onnxruntime"]


def _nan_weight(tmp) -> Args:
    return [_save(_with_weight(np.array([np.nan, np.nan])), tmp / "model.onnx"), "-t", "onnxruntime"]


def _nan_weight_escalate(tmp) -> Args:  # the SVD of decompose would not converge on it
    return [_save(_with_weight(np.array([np.nan])), tmp / "model.onnx"), "-t", "escalate"]


def _inf_weight(tmp) -> Args:
    return [_save(_with_weight(np.array([np.inf, -np.inf])), tmp / "model.onnx"), "-t", "cim"]


def _negative_bn_variance(tmp) -> Args:
    return [_save(_bn(np.array([1.0, -0.5, 1.0])), tmp / "model.onnx"), "-t", "onnxruntime"]


def _hw_nan(tmp) -> Args:
    (tmp / "hw.toml").write_text("dram_gbps = nan\n")
    return [_good(tmp), "-t", "escalate", "--hw", str(tmp / "hw.toml")]


def _hw_inf(tmp) -> Args:
    (tmp / "hw.toml").write_text("adc_energy_pj = inf\n")
    return [_good(tmp), "-t", "cim", "--hw", str(tmp / "hw.toml")]


def _hw_yaml_nan(tmp) -> Args:
    (tmp / "hw.yaml").write_text("adc_energy_pj: .nan\n")
    return [_good(tmp), "-t", "cim", "--hw", str(tmp / "hw.yaml")]


def _report_is_output(tmp) -> Args:
    return [_good(tmp), "-t", "onnxruntime", "-o", str(tmp / "o.onnx"), "--report", str(tmp / "o.onnx")]


def _report_is_output_other_spelling(tmp) -> Args:
    return [_good(tmp), "-t", "onnxruntime", "-o", str(tmp / "o.onnx"), "--report", str(tmp / "." / "o.onnx")]


def _model_is_fifo(tmp) -> Args:
    return [_fifo(tmp / "model.onnx"), "-t", "onnxruntime"]


def _model_links_to_dev_zero(tmp) -> Args:
    (tmp / "zero.onnx").symlink_to("/dev/zero")
    return [str(tmp / "zero.onnx"), "-t", "onnxruntime"]


def _model_symlink_loop(tmp) -> Args:
    (tmp / "a.onnx").symlink_to(tmp / "b.onnx")
    (tmp / "b.onnx").symlink_to(tmp / "a.onnx")
    return [str(tmp / "a.onnx"), "-t", "onnxruntime"]


def _model_dangling_symlink(tmp) -> Args:
    (tmp / "gone.onnx").symlink_to(tmp / "deleted.onnx")
    return [str(tmp / "gone.onnx"), "-t", "onnxruntime"]


def _model_too_large(tmp) -> Args:
    with open(tmp / "huge.onnx", "wb") as fh:  # sparse: no disk space, no read
        fh.truncate(2**31 + 1)
    return [str(tmp / "huge.onnx"), "-t", "onnxruntime"]


def _pipeline_is_fifo(tmp) -> Args:
    return [_good(tmp), "-t", "onnxruntime", "--pipeline", _fifo(tmp / "pipe.toml")]


def _hw_is_fifo(tmp) -> Args:
    return [_good(tmp), "-t", "cim", "--hw", _fifo(tmp / "hw.toml")]


def _output_is_fifo(tmp) -> Args:
    return [_good(tmp), "-t", "onnxruntime", "-o", _fifo(tmp / "out.onnx")]


COMPILE_CASES: dict[str, tuple[Callable[[Path], Args], str]] = {
    f.__name__.lstrip("_"): (f, expected) for f, expected in [
        (_conv_channels_mismatch, "node 'conv3' (Conv): weight has 4 input channels per group, input has 3"),
        (_conv_kernel_larger_than_input, "kernel 7x7 is larger than the padded input 4x4"),
        (_conv_dilated_kernel_larger_than_input, "(dilated 7x7) is larger than the padded input 5x5"),
        (_conv_group_not_dividing_channels, "group count 4 does not divide the 6 input channels"),
        (_conv_group_not_dividing_outputs, "group count 2 does not divide the 3 output channels"),
        (_type_mismatch, "inconsistent type"),
        (_nan_weight, "initializer 'w' contains NaN (2 of 54 values)"),
        (_nan_weight_escalate, "contains NaN"),
        (_inf_weight, "initializer 'w' contains infinite values"),
        (_negative_bn_variance, "node 'bn1' (BatchNormalization): variance 'v' has 1 negative value"),
        (_hw_nan, "'dram_gbps' must be a finite number"),
        (_hw_inf, "'adc_energy_pj' must be a finite number"),
        (_hw_yaml_nan, "'adc_energy_pj' must be a finite number"),
        (_report_is_output, "the report and the output model would be the same file"),
        (_report_is_output_other_spelling, "same file"),
        (_model_is_fifo, "not a regular file (a FIFO)"),
        (_model_links_to_dev_zero, "not a regular file (a character device)"),
        (_model_symlink_loop, "symlink loop"),
        (_model_dangling_symlink, "no such file (dangling symlink"),
        (_model_too_large, "larger than an ONNX file can be"),
        (_pipeline_is_fifo, "not a regular file (a FIFO)"),
        (_hw_is_fifo, "not a regular file (a FIFO)"),
        (_output_is_fifo, "not a regular file"),
    ]
}


def _one_clean_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pimc: error: ") and "internal error" not in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", sorted(COMPILE_CASES))
def test_compile_refuses_in_one_line(case: str, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, expected = COMPILE_CASES[case]
    args = build(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    if "-o" not in args:
        args += ["-o", str(tmp_path / "result.onnx")]
    code = main(["compile", *args])
    line = _one_clean_line(capsys.readouterr().err)
    assert code != 0
    assert expected.lower() in line.lower(), line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_at_least_forty_malformed_cases():
    from test_cli_errors import CASES

    assert len(CASES) + len(COMPILE_CASES) + len(RUN_CASES) + len(SUBPROCESS_CASES) >= 40


# --- run / bench / inspect ------------------------------------------------------------------------

def _two_input_model(tmp) -> str:
    shape = [1, 1, 8, 8]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")]
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], [], None, shape, inputs=inputs)
    return _save(model, tmp / "two.onnx")


RUN_CASES: dict[str, tuple[Callable[[Path], Args], str]] = {
    "run_negative_limit": (lambda t: ["run", _good(t), "--limit", "-5", "--data", "random"],
                           "invalid value for '--limit'"),
    "run_zero_batch": (lambda t: ["run", _good(t), "--batch", "0", "--data", "random"], "invalid value for '--batch'"),
    "run_zero_threads": (lambda t: ["run", _good(t), "--threads", "0", "--data", "random"],
                         "invalid value for '--threads'"),
    "bench_negative_limit": (lambda t: ["bench", _good(t), "--limit", "-1"], "invalid value for '--limit'"),
    "run_two_inputs": (lambda t: ["run", _two_input_model(t), "--data", "random"],
                       "2 inputs ('a', 'b'); the datasets feed single-input image models only"),
    "bench_two_inputs": (lambda t: ["bench", _good(t), _two_input_model(t), "--data", "random"], "2 inputs"),
    "run_fifo": (lambda t: ["run", _fifo(t / "m.onnx"), "--data", "random"], "not a regular file"),
    "inspect_fifo": (lambda t: ["inspect", _fifo(t / "m.onnx")], "not a regular file"),
    "inspect_symlink_loop": (lambda t: ["inspect", *_loop(t)], "symlink loop"),
}


def _loop(tmp: Path) -> list[str]:
    (tmp / "x.onnx").symlink_to(tmp / "x.onnx")
    return [str(tmp / "x.onnx")]


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_run_bench_inspect_refuse_in_one_line(case: str, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, expected = RUN_CASES[case]
    args = build(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(args)
    line = _one_clean_line(capsys.readouterr().err)
    assert code != 0
    assert expected.lower() in line.lower(), line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# --- subprocess: real stderr, including onnxruntime's C++ logger ------------------------------------

def _runtime_reshape_error(tmp) -> Args:
    """A model onnxruntime loads but fails to run: its executor logs the failure itself (coloured)."""
    shape = np.array([3, 5], np.int64)
    model = _model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])],
                   [numpy_helper.from_array(shape, "s")], [1, 1, 4, 4], None)
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return ["run", _save(model, tmp / "reshape.onnx"), "--data", "random", "--limit", "4", "--repeats", "1"]


SUBPROCESS_CASES: dict[str, tuple[Callable[[Path], Args], str]] = {
    "nan_weight": (lambda t: ["compile", _save(_with_weight(np.array([np.nan])), t / "m.onnx"), "-t", "escalate",
                              "-o", str(t / "out.onnx")], "contains NaN"),
    "conv_geometry": (lambda t: ["compile", _save(_conv([1, 3, 8, 8], [2, 4, 3, 3]), t / "m.onnx"), "-t",
                                 "onnxruntime", "-o", str(t / "out.onnx")], "4 input channels per group"),
    "runtime_error": (_runtime_reshape_error, "onnxruntime"),
    "fifo_model": (lambda t: ["compile", _fifo(t / "m.onnx"), "-t", "onnxruntime"], "FIFO"),
}


def _pimc(args: Args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "pimc", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_subprocess_stderr_is_one_line(case: str, tmp_path: Path):
    build, expected = SUBPROCESS_CASES[case]
    args = build(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _pimc(args, tmp_path)
    assert result.returncode != 0
    line = _one_clean_line(result.stderr)
    assert expected.lower() in line.lower(), line
    assert "\x1b[" not in result.stderr  # no coloured onnxruntime log line
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# --- inputs that are right to accept ---------------------------------------------------------------

def _compile_ok(args: Args, capsys) -> None:
    assert main(["compile", *args, "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_huge_constant_of_shape_is_not_materialised(tmp_path: Path):
    """A 200-byte ConstantOfShape([30000, 30000]) compiles without evaluating its 3.6 GB output."""
    fill = numpy_helper.from_array(np.array([1.0], np.float32))
    model = _model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="big", value=fill),
                    helper.make_node("Add", ["x", "c"], ["y"], name="add")],
                   [numpy_helper.from_array(np.array([30000, 30000], np.int64), "s")], [30000, 30000], [30000, 30000])
    src = _save(model, tmp_path / "cos.onnx")
    # VmHWM, not ru_maxrss: ru_maxrss survives fork+exec, so it would count the (large) pytest parent.
    script = ("import re, sys\nfrom pimc.cli.main import main\n"
              f"code = main(['compile', {src!r}, '-t', 'onnxruntime', '-o', {str(tmp_path / 'o.onnx')!r}, '--json'])\n"
              "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
              "print(code, hwm)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    code, peak_kib = map(int, result.stdout.split()[-2:])
    assert code == 0 and result.stderr == ""
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib} KiB"
    assert "ConstantOfShape" in {n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node}


def _fp16_conv_bn(opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    half = TensorProto.FLOAT16

    def t(name, *shape, low=None):
        arr = rng.uniform(low, 1.5, shape) if low is not None else rng.standard_normal(shape)
        return numpy_helper.from_array(arr.astype(np.float16), name)

    inits = [t("w", 4, 3, 3, 3), t("b", 4), t("g", 4, low=0.5), t("beta", 4), t("m", 4), t("v", 4, low=0.5)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    return _model(nodes, inits, [1, 3, 8, 8], [1, 4, 8, 8], opset=opset, elem=half)


def test_float16_fold_batchnorm_verifies(tmp_path: Path, capsys):
    src = _save(_fp16_conv_bn(), tmp_path / "fp16.onnx")
    _compile_ok([src, "-t", "onnxruntime", "--passes", "fold-batchnorm", "--verify", "-o", str(tmp_path / "o.onnx")],
                capsys)


def test_float16_quantize_runs_on_onnxruntime(tmp_path: Path, capsys):
    src = _save(_fp16_conv_bn(), tmp_path / "fp16.onnx")
    out = tmp_path / "q.onnx"
    _compile_ok([src, "-t", "onnxruntime", "--passes", "fold-batchnorm,quantize", "-o", str(out)], capsys)
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain == "") >= 19
    assert "QuantizeLinear" in {n.op_type for n in model.graph.node}
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float16)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float16
    assert np.abs(got.astype(np.float32) - want).max() <= 0.05 * np.abs(want).max()


@pytest.mark.parametrize("target", ["onnxruntime", "escalate", "cim", "cmp-pim"])
def test_ir3_model_with_initializer_inputs_compiles(target: str, tmp_path: Path, capsys):
    model = _bn(np.array([1.0, 0.5, 2.0]))
    model.ir_version = 3
    model.opset_import[0].version = 9
    model.graph.node[1].attribute.append(helper.make_attribute("epsilon", 1e-5))
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    out = tmp_path / "out.onnx"
    _compile_ok([_save(model, tmp_path / "ir3.onnx"), "-t", target, "-o", str(out)], capsys)
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]


def test_nan_where_the_original_has_nan_too_is_agreement(tmp_path: Path, capsys):
    """Sqrt of random normal inputs is NaN in both models: --verify succeeds and reports finite errors."""
    model = _model([helper.make_node("Sqrt", ["x"], ["y"], name="sqrt")], [], [1, 8], [1, 8])
    _compile_ok([_save(model, tmp_path / "sqrt.onnx"), "-t", "onnxruntime", "--verify", "-o",
                 str(tmp_path / "o.onnx")], capsys)
