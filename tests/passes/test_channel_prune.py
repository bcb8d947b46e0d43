"""channel-prune: channels tied by a residual Add go together, kept counts are block multiples, and the narrowed
model computes exactly what the original computes with those filters zeroed (onnxruntime as the oracle)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pimc.compiler.graph import get_initializer, set_initializer
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.pipeline import PassManager
from pimc.models.train import export_onnx


class Residual(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 10, 1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.head(h).mean(dim=(2, 3))


@pytest.fixture()
def model(tmp_path) -> onnx.ModelProto:
    torch.manual_seed(0)
    return load_model(export_onnx(Residual(), tmp_path / "r.onnx", (3, 8, 8)))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]


def _prune(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, dict]:
    manager = PassManager([get_pass("fold-constants")(), get_pass("channel-prune")(**options)], PassContext())
    out = manager.run(copy.deepcopy(model))
    return out, manager.records[-1].stats


def _widths(model: onnx.ModelProto) -> dict[str, int]:
    return {n.name: get_initializer(model.graph, n.input[1]).shape[0] for n in model.graph.node if n.op_type == "Conv"}


def test_tied_channels_go_together_and_the_narrow_model_equals_the_zeroed_one(model):
    pruned, stats = _prune(model, ratio=0.5, block=8)
    stream = next(g for g in stats["groups"] if len(g["layers"]) == 2)  # the stem and b write the residual stream
    assert {name.split("/")[1] for name in stream["layers"]} == {"stem", "b"}
    assert len(stream["removed"]) == 16 and stream["width"] == 32
    widths = _widths(pruned)
    assert widths["/stem/Conv"] == widths["/b/Conv"] == 16  # removed together
    zeroed = copy.deepcopy(model)
    for group in stats["groups"]:
        for node in (n for n in zeroed.graph.node if n.name in group["layers"]):
            w, b = get_initializer(zeroed.graph, node.input[1]).copy(), get_initializer(zeroed.graph, node.input[2]).copy()
            w[group["removed"]], b[group["removed"]] = 0.0, 0.0
            set_initializer(zeroed.graph, node.input[1], w)
            set_initializer(zeroed.graph, node.input[2], b)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(pruned, x), _run(zeroed, x), rtol=1e-4, atol=1e-5)


def test_kept_counts_are_block_multiples_and_a_frozen_group_says_why(model):
    pruned, stats = _prune(model, ratio=0.3, block=16)
    assert all((g["width"] - len(g["removed"])) % 16 == 0 for g in stats["groups"])
    assert _widths(pruned)["/head/Conv"] == 10  # its output reaches the graph output through ReduceMean: frozen
    assert any(s["layers"] == ["/head/Conv"] and s["reason"] for s in stats["skipped"])


def _feeds(count: int = 16, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def test_the_readers_refit_brings_the_narrow_model_closer_to_the_original(model):
    calibration = _feeds()
    manager = PassManager([get_pass("fold-constants")(), get_pass("channel-prune")(ratio=0.5)],
                          PassContext(calibration=calibration))
    refitted = manager.run(copy.deepcopy(model))
    plain, _ = _prune(model, ratio=0.5)  # no data: no refit
    x = np.concatenate([f["input"] for f in _feeds(8, seed=2)])  # inputs that did not calibrate
    reference = _run(model, x)

    def error(m):
        return float(np.linalg.norm(_run(m, x) - reference) / np.linalg.norm(reference))

    assert _widths(refitted) == _widths(plain)
    assert error(refitted) < 0.5 * error(plain)


def test_a_reader_refit_is_the_least_squares_solution_on_the_kept_channels():
    from pimc.compiler.reconstruct import DEFAULT_RIDGE, dense_stats
    from pimc.passes.channel.readers import ReaderFit
    from pimc.passes.prune.prune import PrunableLayer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))  # correlated channels
    weight, bias = rng.standard_normal((6, 3)), rng.standard_normal(3)  # a Gemm's stored [in, out]
    node = onnx.helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")
    layer = PrunableLayer(node, weight, weight.T, bias, True)
    fit = ReaderFit(layer, 6, dense_stats(x, x, weight, bias))
    rows, fitted_bias, error = fit.refit([1, 4])
    kept = [0, 2, 3, 5]
    design = np.hstack([x[:, kept], np.ones((400, 1))])
    gram = design.T @ design
    ridge = DEFAULT_RIDGE * np.mean(np.diag(gram)[:-1])  # the bias feature is not regularised
    solution = np.linalg.solve(gram + np.diag([ridge] * 4 + [0.0]), design.T @ (x @ weight + bias))
    assert np.all(rows[:, [1, 4]] == 0)
    np.testing.assert_allclose(rows[:, kept], solution[:-1].T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fitted_bias, solution[-1], rtol=1e-6, atol=1e-8)
    residual = design @ solution - (x @ weight + bias)
    assert error == pytest.approx(np.sum(residual**2) / np.sum((x @ weight + bias) ** 2), rel=0.05, abs=1e-6)


def test_without_a_budget_or_a_ratio_nothing_changes(model):
    pruned, stats = _prune(model)
    assert _widths(pruned) == _widths(model) and stats["groups"] == [] and "budget" in stats["note"]


def test_the_search_keeps_the_drop_within_the_budget_and_removes_macs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx"
    out = tmp_path / "c.onnx"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled), "--target", "onnxruntime", "--data",
                           "digits", "--passes", "fold-constants,eliminate-identity,fold-batchnorm,channel-prune,"
                           "shrink,cleanup", "--set", "channel-prune.objective=macs", "-o", str(out), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    record = next(p for p in report["passes"] if p["name"] == "channel-prune")
    assert record["macs_after"] < record["macs_before"] and record["stats"]["groups"]
    assert all(g["kept"] % 8 == 0 for g in record["stats"]["groups"])
    assert report["accuracy"]["drop_points"] <= report["accuracy"]["max_drop_points"]


def test_on_a_simulator_target_the_search_costs_the_narrowed_model(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx"
    done = subprocess.run([sys.executable, "-m", "pimc", "compile", str(bundled), "--target", "escalate", "--data",
                           "digits", "--passes", "fold-constants,eliminate-identity,fold-batchnorm,channel-prune,"
                           "shrink,cleanup", "--max-accuracy-drop", "2", "-o", str(tmp_path / "c.onnx"), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    record = next(p for p in report["passes"] if p["name"] == "channel-prune")
    chosen = record["stats"]["groups"]
    assert chosen and record["macs_after"] < record["macs_before"]
    assert all(g["target_latency_delta_s"] < 0 for g in chosen)  # costed narrowed: cheaper on escalate
