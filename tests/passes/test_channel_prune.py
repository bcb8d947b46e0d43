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


def test_without_a_ratio_nothing_changes(model):
    pruned, stats = _prune(model)
    assert "skipped" in stats and _widths(pruned) == _widths(model)
