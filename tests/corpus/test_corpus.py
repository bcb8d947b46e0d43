"""The corpus: every model compiles for every target through ``compile_model``; the output passes the full
checker and runs on onnxruntime; onnxruntime outputs match the input model; simulator reports cost every
compute layer or list it as skipped with a reason, with finite positive latency and energy.

Run the whole corpus (slow cases too) with ``python -m pytest tests/corpus -m 'slow or not slow'``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus_cases import CASES, SIMULATORS, TARGETS, Case
from onnx import helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler.input_shapes import parse_input_shape
from pimc.compiler.workload import COMPUTE_OPS


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


_BUILT: dict[str, Path] = {}


def _model_path(case: Case, folder: Path) -> Path:
    if case.name not in _BUILT:
        sub = folder / case.name
        sub.mkdir(exist_ok=True)
        _BUILT[case.name] = case.build(sub)
    return _BUILT[case.name]


def _params():
    for case in CASES:
        for target in TARGETS:
            marks = [pytest.mark.slow] if case.slow else []
            reason = case.xfail.get(target) or case.xfail.get("*")
            if reason:
                marks.append(pytest.mark.xfail(reason=reason, strict=True))
            yield pytest.param(case, target, marks=marks, id=f"{case.name}-{target}")


def _feeds(model: onnx.ModelProto, case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs; symbolic dims take the case's --input-shape, else 2 (batch) or 8."""
    given = dict(parse_input_shape(s) for s in case.input_shapes)
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        spec = given.get(vi.name)
        shape = [d if d else (spec[i] if spec else (2 if i == 0 else 8)) for i, d in enumerate(dims)]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def _assert_close(reference: list[np.ndarray], got: list[np.ndarray], rel: float) -> None:
    assert len(reference) == len(got)
    for ref, new in zip(reference, got, strict=True):
        assert ref.shape == new.shape
        ref64, new64 = ref.astype(np.float64), new.astype(np.float64)
        scale = max(float(np.max(np.abs(ref64))), 1e-12)
        assert float(np.max(np.abs(ref64 - new64))) / scale <= rel


def covered_layers(cost: dict) -> set[str]:
    """Node names a simulator report costs (layer names and their members) or skips with a reason."""
    names = set()
    for layer in cost["layers"]:
        names.add(layer["name"])
        names.update(layer.get("members") or [])
    for entry in cost.get("skipped") or []:
        if entry.get("reason") and entry.get("node"):
            names.add(entry["node"])
    return names


def check_simulator_report(report: dict, model: onnx.ModelProto) -> None:
    cost = report["cost"]
    assert cost is not None
    for key in ("latency_s", "energy_j"):
        assert math.isfinite(cost[key]) and cost[key] > 0, f"{key} = {cost[key]}"
    compute = [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]
    missing = sorted(set(compute) - covered_layers(cost))
    assert not missing, f"compute layers neither costed nor skipped with a reason: {missing}"


@pytest.mark.parametrize(("case", "target"), list(_params()))
def test_corpus_model_compiles(case: Case, target: str, corpus_dir: Path, tmp_path: Path):
    src = _model_path(case, corpus_dir)
    out = tmp_path / "out.onnx"
    shapes = case.input_shapes if target in SIMULATORS else ()
    model, report = compile_model(CompileOptions(input=str(src), target=target, output=str(out),
                                                 input_shapes=shapes, sets=case.sets.get(target, ())))
    onnx.checker.check_model(str(out), full_check=True)
    assert report["model"]["macs_before"] > 0 and report["model"]["macs"] > 0
    feeds = _feeds(onnx.load(str(out)), case)
    got = _run(out, feeds)
    if target == "onnxruntime":
        _assert_close(_run(src, feeds), got, case.rel_tol)
        return
    check_simulator_report(report, onnx.load(str(out)))
    if _symbolic_batch(onnx.load(str(src), load_external_data=False)) and not shapes:
        assert any("symbolic batch" in note for note in report["assumptions"])


def _symbolic_batch(model: onnx.ModelProto) -> bool:
    inits = {i.name for i in model.graph.initializer}
    return any(not vi.type.tensor_type.shape.dim[0].HasField("dim_value")
               for vi in model.graph.input if vi.name not in inits and vi.type.tensor_type.shape.dim)


EXTRA_PIPELINES = {
    "pattern": ("onnxruntime", "fold-constants,eliminate-identity,fold-batchnorm,pattern-prune,shrink,recompose,"
                               "cleanup", ()),
    "decompose": ("onnxruntime", "fold-constants,eliminate-identity,fold-batchnorm,decompose,shrink,recompose,"
                                 "cleanup", ("decompose.rank=2", "decompose.energy=none")),
    "pattern-escalate": ("escalate", "fold-constants,eliminate-identity,fold-batchnorm,pattern-prune,decompose,"
                                     "shrink,cleanup", ()),
    "pattern-cim": ("cim", "fold-constants,eliminate-identity,fold-batchnorm,pattern-prune,shrink,fuse-relu,"
                           "quantize,cleanup", ()),
    "cim-emulate": ("cim", "fold-constants,eliminate-identity,fold-batchnorm,fuse-relu,quantize,cim-emulate,"
                           "cleanup", ()),
    "bitmap": ("cim", "fold-constants,eliminate-identity,fold-batchnorm,bitmap,cleanup", ()),
}


def _extra_params():
    for case in CASES:
        if case.slow or "*" in case.xfail:
            continue
        for name, (target, _, _) in EXTRA_PIPELINES.items():
            marks = [pytest.mark.slow]
            if case.xfail.get(target):
                marks.append(pytest.mark.xfail(reason=case.xfail[target], strict=True))
            yield pytest.param(case, name, marks=marks, id=f"{case.name}-{name}")


@pytest.mark.parametrize(("case", "pipeline"), list(_extra_params()))
def test_corpus_model_survives_compressing_pipelines(case: Case, pipeline: str, corpus_dir: Path, tmp_path: Path):
    """pattern-prune, decompose at a fixed rank, shrink, recompose, cim-emulate and bitmap on every corpus
    graph: each pass leaves what it cannot handle alone; the output is valid and runs."""
    target, passes, sets = EXTRA_PIPELINES[pipeline]
    src = _model_path(case, corpus_dir)
    out = tmp_path / "out.onnx"
    shapes = case.input_shapes if target in SIMULATORS else ()
    _, report = compile_model(CompileOptions(input=str(src), target=target, output=str(out), passes=passes,
                                             sets=sets, input_shapes=shapes))
    onnx.checker.check_model(str(out), full_check=True)
    _run(out, _feeds(onnx.load(str(out)), case))
    if target != "onnxruntime":
        check_simulator_report(report, onnx.load(str(out)))
