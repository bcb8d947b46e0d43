"""pattern-prune: constraints, optimal projection, library derivation, idempotence, skips, ONNX round trip."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pimc.app.compile import CompileOptions, compile_model
from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.passbase import PassContext, get_pass
from pimc.passes.pattern.pattern_prune import (
    PRUNED,
    PatternConfig,
    canonical_library,
    default_nonzeros,
    derive_library,
    prune_kernels,
)


def _conv(name: str, x: str, y: str, w: np.ndarray, group: int = 1) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    k = w.shape[2]
    node = helper.make_node("Conv", [x, f"{name}.w"], [y], name=name, pads=[k // 2] * 4, group=group)
    return node, numpy_helper.from_array(w.astype(np.float32), f"{name}.w")


def make_model(seed: int = 0) -> onnx.ModelProto:
    """3x3 (8→16), 5x5 (16→12), depthwise 3x3 (12), 1x1 (12→10) convs with ReLUs, 8x8 input."""
    rng = np.random.default_rng(seed)
    specs = [
        ("c3", (16, 8, 3, 3), 1), ("c5", (12, 16, 5, 5), 1), ("dw", (12, 1, 3, 3), 12), ("pw", (10, 12, 1, 1), 1),
    ]
    nodes, inits, x = [], [], "input"
    for i, (name, shape, group) in enumerate(specs):
        node, init = _conv(name, x, f"{name}.y", rng.normal(0, 0.3, shape), group)
        relu = helper.make_node("Relu", [f"{name}.y"], [f"r{i}"], name=f"{name}.relu")
        nodes += [node, relu]
        inits.append(init)
        x = f"r{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 10, 8, 8])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def run_pass(model: onnx.ModelProto, **opts):
    return get_pass("pattern-prune")(**opts).run(model, PassContext())


def weight(model: onnx.ModelProto, node: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == f"{node}.w"))


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def check_conforms(model: onnx.ModelProto, name: str, n: int, patterns: int, connectivity: float) -> None:
    """Every kernel is zero (id −1) or exactly its library pattern's support; ≤ patterns used; cut ≥ c."""
    w = weight(model, name)
    nd = node(model, name)
    library = ann.get_node_annotation(nd, "pattern_library")
    ids = ann.get_node_map(model, nd, "pattern")
    assert ids.dtype == np.int16 and ids.shape == w.shape[:2]
    assert ann.get_node_annotation(nd, "pattern_nonzeros") == n
    assert len(library) <= patterns and all(len(p) == n for p in library)
    k = w.shape[2]
    kernels = w.reshape(-1, k * k)
    flat = ids.reshape(-1)
    for kernel, pid in zip(kernels, flat, strict=True):
        if pid == PRUNED:
            assert not kernel.any()
        else:
            assert set(np.flatnonzero(kernel)) <= set(library[pid])
            assert (k * k // 2) in library[pid]
    assert np.count_nonzero(kernels, axis=1).max() <= n
    assert len(set(flat[flat >= 0].tolist())) <= patterns
    assert (flat == PRUNED).mean() >= np.floor(connectivity * len(flat)) / len(flat)
    assert ann.get_node_annotation(nd, "connectivity") == pytest.approx((flat == PRUNED).mean(), abs=1e-6)


@pytest.mark.parametrize("library", ["derived", "greedy", "canonical"])
def test_every_kernel_follows_a_library_pattern(library):
    model = make_model()
    result = run_pass(model, connectivity=0.5, library=library)
    assert result.changed
    check_conforms(result.model, "c3", 4, 8, 0.5)
    check_conforms(result.model, "c5", 11, 8, 0.5)
    assert result.stats["nonzero_after"] < result.stats["nonzero_before"] / 4


def test_depthwise_and_pointwise_skipped_with_reason():
    model = make_model()
    original = {n: weight(model, n).copy() for n in ("dw", "pw")}
    stats = run_pass(model).stats
    reasons = {s["node"]: s["reason"] for s in stats["skipped"]}
    assert "depthwise" in reasons["dw"] and "1x1" in reasons["pw"]
    for name, w in original.items():
        assert np.array_equal(weight(model, name), w)
        assert ann.get_node_annotation(node(model, name), "pattern_library") is None


def test_include_exclude_by_name():
    model = make_model()
    c5 = weight(model, "c5").copy()
    stats = run_pass(model, exclude="c5*", connectivity=0.0).stats
    assert list(stats["layers"]) == ["c3"]
    assert np.array_equal(weight(model, "c5"), c5)
    stats = run_pass(make_model(), include="c5", connectivity=0.0).stats
    assert list(stats["layers"]) == ["c5"]


def test_projection_keeps_most_energy_brute_force():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    library = canonical_library(3, 4, 8)
    result = prune_kernels(w, PatternConfig(connectivity=0.0), library=library)
    for kernel, out, pid in zip(w.reshape(-1, 9), result.weight.reshape(-1, 9), result.ids.reshape(-1), strict=True):
        energies = [float((kernel[p] ** 2).sum()) for p in library]
        assert energies[pid] == pytest.approx(max(energies))
        expected = np.zeros(9, np.float32)
        expected[library[pid]] = kernel[library[pid]]
        assert np.array_equal(out, expected)


def test_connectivity_removes_lowest_norm_kernels():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(10, 4, 3, 3)).astype(np.float32)
    result = prune_kernels(w, PatternConfig(connectivity=0.3, library="canonical"))
    kept = prune_kernels(w, PatternConfig(connectivity=0.0, library="canonical")).weight.reshape(40, 9)
    norms = np.linalg.norm(kept, axis=1)
    removed = result.ids.reshape(-1) == PRUNED
    assert removed.sum() == 12
    assert norms[removed].max() <= norms[~removed].min()


def test_derived_library_is_the_most_frequent_centre_patterns():
    rng = np.random.default_rng(5)
    planted = {(0, 1, 2, 4): 9, (3, 4, 5, 8): 6, (4, 6, 7, 8): 3}
    kernels = []
    for pattern, count in planted.items():
        for _ in range(count):
            kernel = rng.uniform(0.0, 0.1, 9)
            kernel[list(pattern)] = rng.uniform(1.0, 2.0, len(pattern))
            kernels.append(kernel)
    library = derive_library(np.array(kernels), 4, 2, "derived")
    assert library == [[0, 1, 2, 4], [3, 4, 5, 8]]
    centred = derive_library(rng.normal(size=(50, 9)), 4, 8, "derived")
    assert all(4 in p for p in centred) and len(centred) == 8


def test_canonical_library_shapes_and_defaults():
    assert canonical_library(3, 4, 8) == [
        [1, 3, 4, 5], [1, 3, 4, 7], [1, 4, 5, 7], [3, 4, 5, 7], [0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8],
    ]
    assert default_nonzeros(3) == 4 and default_nonzeros(5) == 11
    assert len({tuple(p) for p in canonical_library(5, 11, 8)}) == 8


@pytest.mark.parametrize("library", ["derived", "greedy", "canonical"])
def test_idempotent(library):
    model = make_model(seed=7)
    first = run_pass(model, connectivity=0.5, library=library, patterns=6).model
    snapshot = onnx.ModelProto()
    snapshot.CopyFrom(first)
    second = run_pass(first, connectivity=0.5, library=library, patterns=6)
    assert not second.changed
    for name in ("c3", "c5"):
        assert np.array_equal(weight(second.model, name), weight(snapshot, name))
        assert ann.node_annotations(node(second.model, name)) == ann.node_annotations(node(snapshot, name))
        assert np.array_equal(ann.get_node_map(second.model, node(second.model, name), "pattern"),
                              ann.get_node_map(snapshot, node(snapshot, name), "pattern"))


def test_conforming_weights_are_left_alone_and_outputs_match_onnxruntime():
    model = make_model(seed=8)
    conforming = run_pass(model, connectivity=0.25).model
    reference = _ort(conforming)
    again = run_pass(conforming, connectivity=0.25)
    assert not again.changed
    assert np.array_equal(_ort(again.model), reference)


def test_pruned_model_matches_oracle_on_onnxruntime():
    model = make_model(seed=9)
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    library = canonical_library(3, 4, 8)
    w = weight(model, "c3").reshape(-1, 9)
    projected = np.zeros_like(w)
    for i, kernel in enumerate(w):
        best = max(library, key=lambda p: float((kernel[p] ** 2).sum()))
        projected[i, best] = kernel[best]
    for t in oracle.graph.initializer:
        if t.name == "c3.w":
            t.CopyFrom(numpy_helper.from_array(projected.reshape(16, 8, 3, 3), "c3.w"))
    pruned = run_pass(model, library="canonical", include="c3", connectivity=0.0).model
    np.testing.assert_allclose(_ort(pruned), _ort(oracle), rtol=0, atol=0)


def test_annotations_survive_save_load_checker_and_onnxruntime(tmp_path):
    model = run_pass(make_model(), connectivity=0.5).model
    path = tmp_path / "p.onnx"
    onnx.save(model, str(path))
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    for name in ("c3", "c5"):
        nd = node(loaded, name)
        assert ann.get_node_annotation(nd, "pattern_library") == ann.get_node_annotation(node(model, name), "pattern_library")
        assert np.array_equal(ann.get_node_map(loaded, nd, "pattern"), ann.get_node_map(model, node(model, name), "pattern"))
    out = _ort(loaded)
    assert out.shape == (2, 10, 8, 8) and np.isfinite(out).all()


def test_runs_in_the_compile_pipeline(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(make_model(), str(src))
    out = tmp_path / "out.onnx"
    model, report = compile_model(CompileOptions(
        input=str(src), target="onnxruntime", output=str(out), passes="pattern-prune",
        sets=("pattern-prune.connectivity=0.5", "pattern-prune.patterns=4"),
    ))
    check_conforms(onnx.load(str(out)), "c3", 4, 4, 0.5)
    assert "pattern-prune" in str(report)


def test_bad_options_are_user_errors():
    with pytest.raises(PimcError):
        get_pass("pattern-prune")(connectivity=1.5)
    with pytest.raises(PimcError):
        get_pass("pattern-prune")(library="random")


def _ort(model: onnx.ModelProto) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    return session.run(None, {"input": x})[0]


def test_energy_kept_matches_brute_force_over_all_centre_patterns():
    rng = np.random.default_rng(11)
    w = rng.normal(size=(4, 4, 3, 3)).astype(np.float32)
    full = [sorted([4, *c]) for c in itertools.combinations([0, 1, 2, 3, 5, 6, 7, 8], 3)]
    result = prune_kernels(w, PatternConfig(patterns=56, library="canonical"), library=full)
    best = sum(max(float((k[p] ** 2).sum()) for p in full) for k in w.reshape(-1, 9))
    assert float((result.weight ** 2).sum()) == pytest.approx(best, rel=1e-6)


def test_default_options_recognise_an_already_pruned_model():
    pruned = run_pass(make_model(seed=12), nonzeros=3, connectivity=0.6, library="greedy").model
    again = run_pass(pruned, library="greedy")
    assert not again.changed
    other = run_pass(pruned)
    assert all(not v["weights_changed"] for v in other.stats["layers"].values())
    assert ann.get_node_annotation(node(again.model, "c5"), "pattern_nonzeros") == 3
    for name in ("c3", "c5"):
        del node(pruned, name).metadata_props[:]
    stripped = run_pass(pruned, library="greedy")
    assert all(not v["weights_changed"] for v in stripped.stats["layers"].values())
    assert ann.get_node_annotation(node(stripped.model, "c3"), "pattern_nonzeros") == 3


def _random_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(size=(2, 8, 8, 8)).astype(np.float32)} for _ in range(count)]


def _layer_error(reference: onnx.ModelProto, model: onnx.ModelProto, tensor: str) -> float:
    """Relative error of one tensor against the reference model, on inputs neither model was fitted on."""
    from pimc.compiler.reconstruct import capture

    feeds = _random_feeds(4, seed=99)
    ref = capture(reference, [tensor], feeds)[tensor]
    out = capture(model, [tensor], feeds)[tensor]
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_forced_setting_is_refitted_and_beats_plain_pruning_in_output_error():
    ctx = PassContext(calibration=_random_feeds(16, seed=1))
    plain = get_pass("pattern-prune")(connectivity=0.5, refit=False).run(make_model(seed=5), ctx)
    refit = get_pass("pattern-prune")(connectivity=0.5).run(make_model(seed=5), ctx)
    assert refit.stats["layers"]["c3"]["refitted"] and not plain.stats["layers"]["c3"]["refitted"]
    errors = {t: [_layer_error(make_model(seed=5), m.model, t) for m in (plain, refit)] for t in ("c3.y", "c5.y")}
    # c3 reads white noise: independent features, so least squares on the support is the pruned weight itself
    assert errors["c3.y"][1] <= 1.02 * errors["c3.y"][0]
    # c5 reads correlated features from the pruned c3 and is fitted to the original c3 → c5 output
    assert errors["c5.y"][1] < 0.9 * errors["c5.y"][0]
    layer = refit.stats["layers"]["c5"]
    assert layer["refit_relative_error"] < layer["relative_error"]


def test_refitted_weights_keep_the_exact_pattern_support_and_annotations():
    ctx = PassContext(calibration=_random_feeds(8, seed=2))
    result = get_pass("pattern-prune")(connectivity=0.5, patterns=4).run(make_model(seed=6), ctx)
    plain = get_pass("pattern-prune")(connectivity=0.5, patterns=4, refit=False).run(make_model(seed=6), PassContext())
    for name, n in (("c3", 4), ("c5", 11)):
        check_conforms(result.model, name, n, 4, 0.5)
        nd, ref = node(result.model, name), node(plain.model, name)
        assert ann.get_node_annotation(nd, "pattern_library") == ann.get_node_annotation(ref, "pattern_library")
        ids = ann.get_node_map(result.model, nd, "pattern")
        assert np.array_equal(ids, ann.get_node_map(plain.model, ref, "pattern"))
        assert np.array_equal(weight(result.model, name) != 0, weight(plain.model, name) != 0)
        assert not np.allclose(weight(result.model, name), weight(plain.model, name))
    again = get_pass("pattern-prune")(connectivity=0.5, patterns=4).run(result.model, PassContext())
    assert not again.changed


def test_searched_without_labelled_data_changes_nothing():
    model = make_model(seed=3)
    before = {n: weight(model, n).copy() for n in ("c3", "c5")}
    result = get_pass("pattern-prune")().run(model, PassContext(calibration=_random_feeds(4, seed=0)))
    assert not result.changed and result.stats["layers"] == {}
    assert "no accuracy budget" in result.stats["note"]
    for name, w in before.items():
        assert np.array_equal(weight(result.model, name), w)


def test_bundled_model_search_stays_within_budget_and_lists_skipped_layers(tmp_path):
    from pimc.models import bundled_model_path

    _, report = compile_model(CompileOptions(
        input=str(bundled_model_path()), target="onnxruntime", output=str(tmp_path / "o.onnx"), data="digits",
        passes="fold-constants,eliminate-identity,fold-batchnorm,pattern-prune,cleanup",
    ))
    assert report["accuracy"]["drop_points"] <= 1.0 + 1e-9
    assert report["model"]["effective_macs"] < report["model"]["effective_macs_before"]
    stats = next(p for p in report["passes"] if p["name"] == "pattern-prune")["stats"]
    assert stats["layers"]
    for layer in stats["layers"].values():
        assert layer["refitted"] and "damage" in layer and "setting" in layer
        assert layer["macs_after"] < layer["macs_before"]
    assert all(s["reason"] for s in stats["skipped"])
    skipped = [s for s in stats["skipped"] if s.get("kind")]
    if skipped:
        assert any(w.startswith("layers left uncompressed by pattern-prune") for w in report["warnings"])
