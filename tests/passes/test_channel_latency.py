"""channel-prune's measured-latency objective: the one-node islands of a group's layers at each width, their
timing, the search's candidates costed by them, and the whole-model check that keeps the input when the
narrowed model is not measured faster."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pimc.compiler.graph import value_shapes
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext, get_pass
from pimc.models.train import export_onnx
from pimc.passes.channel import latency as latency_module
from pimc.passes.channel.channel_prune import channel_groups
from pimc.passes.channel.latency import island_signature, time_islands


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 24, 3, padding=1)
        self.fc = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(h, 2), 1))


@pytest.fixture()
def model(tmp_path) -> onnx.ModelProto:
    torch.manual_seed(0)
    return load_model(export_onnx(Net(), tmp_path / "n.onnx", (3, 8, 8)))


def test_islands_take_the_kept_width_as_outputs_of_a_producer_and_inputs_of_a_reader(model):
    groups = {g.width: g for g in channel_groups(model)[0]}
    shapes = value_shapes(model)
    first = groups[16]
    producer = island_signature(first.producers[0], shapes, 16, 8, producer=True)
    reader = island_signature(first.readers[0], shapes, 16, 8, producer=False)
    assert (producer.weight, producer.input) == ((8, 3, 3, 3), (3, 8, 8))
    assert (reader.weight, reader.input) == ((24, 8, 3, 3), (8, 8, 8))
    fc = island_signature(groups[24].readers[0], shapes, 24, 8, producer=False)  # reads a flattened 4 x 4 map
    assert (fc.op, fc.weight, fc.input) == ("Gemm", (10, 8 * 16), (8 * 16,))


def test_every_island_runs_and_is_timed(model):
    groups = channel_groups(model)[0]
    shapes = value_shapes(model)
    signatures = {island_signature(layer, shapes, g.width, k, producer)
                  for g in groups for k in (g.width, 8)
                  for layers, producer in ((g.producers, True), (g.readers, False)) for layer in layers}
    times = time_islands(signatures, list(model.opset_import), [1, 4], threads=1)
    assert set(times) == signatures and all(t > 0 for t in times.values())


def _latency_pass(monkeypatch, model, speedup: float, margin: float = 0.03):
    """channel-prune with the latency objective, a forced search outcome and ``speedup`` as the whole-model
    measurement (timings are the machine's; the decisions on them are what is tested)."""
    def fake_whole(_before, _after, _x, batches, _threads):
        return {f"speedup_b{b}": speedup for b in batches}

    monkeypatch.setattr(latency_module, "compare_whole", fake_whole)
    prune = get_pass("channel-prune")(objective="latency", batches=["1", "4"], margin=margin, threads=1)
    prune._timed_batches = [1, 4]  # what the island timing chose for this model
    ctx = PassContext(calibration=[{"input": np.zeros((1, 3, 8, 8), np.float32)}])
    narrowed = copy.deepcopy(model)
    stats = {"groups": [{"kept": 8}]}
    return prune._checked(copy.deepcopy(model), narrowed, ctx, stats)


def test_the_narrowed_model_is_kept_only_when_measured_faster_at_every_batch(monkeypatch, model):
    faster = _latency_pass(monkeypatch, model, speedup=1.2)
    assert faster.changed and faster.stats["whole_model_latency"]["speedup_b4"] == 1.2
    slower = _latency_pass(monkeypatch, model, speedup=1.01)
    assert not slower.changed and slower.stats["groups"] == [] and "kept the input" in slower.stats["note"]


def test_candidates_cost_their_measured_share_of_the_layer_time(monkeypatch, model):
    groups = channel_groups(model)[0]
    measured = {g.names[0]: {g.width: 2.0, 8: 1.5, 16: 1.8} for g in groups}
    prune = get_pass("channel-prune")(objective="latency")
    prune._latency = measured
    prune._total_macs = sum(g.macs for g in groups)
    prune._total_ms = 2.0 * len(groups)
    group = groups[0]
    candidate = prune._candidate(group, [], list(range(group.width - 8)), 8)
    share = (candidate.info["dense_cost"] - candidate.cost) / prune._total_macs
    assert share == pytest.approx((2.0 - 1.5) / prune._total_ms)
    assert candidate.info["latency_ms"] == 1.5


def test_a_depthwise_reader_keeps_as_many_channels_and_groups(tmp_path):
    class Separable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pw = nn.Conv2d(16, 8, 1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            h = torch.relu(self.dw(torch.relu(self.a(x))))
            return self.fc(torch.relu(self.pw(h)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = load_model(export_onnx(Separable(), tmp_path / "s.onnx", (3, 8, 8)))
    shapes = value_shapes(model)
    group = next(g for g in channel_groups(model)[0] if g.width == 16)
    depthwise = next(r for r in group.readers if r.kind == "depthwise")
    sig = island_signature(depthwise, shapes, 16, 8, producer=False)
    attributes = {a.name: a for a in map(onnx.AttributeProto.FromString, sig.attributes)}
    assert (sig.weight, sig.input, attributes["group"].i) == ((8, 1, 3, 3), (8, 8, 8), 8)
    times = time_islands({sig}, list(model.opset_import), [1], threads=1)
    assert times[sig] > 0


def test_a_group_with_a_layer_that_cannot_be_timed_alone_is_left_out(monkeypatch, model):
    groups = channel_groups(model)[0]
    real = latency_module.island_signature
    monkeypatch.setattr(latency_module, "island_signature",  # the FC reads only the second conv's group
                        lambda layer, *a, **k: None if layer.node.op_type == "Gemm" else real(layer, *a, **k))
    prune = get_pass("channel-prune")(objective="latency", batches=["1"], threads=1)
    skipped: list = []
    measured = prune._measured_groups(model, groups, skipped)
    assert [g.width for g in measured] == [16] and set(prune._latency) == {measured[0].names[0]}
    assert [s["layers"] for s in skipped] == [[g.names for g in groups if g.width == 24][0]]
    assert "cannot be measured alone" in skipped[0]["reason"]
