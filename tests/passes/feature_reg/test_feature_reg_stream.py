"""Stream gate placement: one gate per map the convs read, on the module that produced it, so every reader
(a residual Add, a shortcut conv) and the stored map are gated (tiny residual models, one epoch)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pimc.compiler import annotations as ann
from pimc.compiler.errors import PimcError
from pimc.compiler.loader import load_model
from pimc.compiler.passbase import PassContext, get_pass
from pimc.models.train import make_loader
from pimc.passes.feature_reg.config import LEVEL_INPUT, FeatureRegConfig
from pimc.passes.feature_reg.exporter import calibrate, export_feature_reg_onnx, feature_regularize
from pimc.passes.feature_reg.gates import GatedModel

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SHAPE = (1, 8, 8)


class Block(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)), one ReLU module called twice (as models/zoo.BasicBlock)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


class FunctionalBlock(Block):
    """The inner ReLU is functional: the map conv2 reads has no producing module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


def residual(block: type[Block] = Block) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()), block(4, 4), block(4, 6),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return x, y


def train(placement: str, model: nn.Module | None = None, gate: str = "threshold"):
    x, y = data()
    config = FeatureRegConfig(levels=(0.4, 0.7), epochs=1, calibration=32, placement=placement, gate=gate)
    return feature_regularize(model or residual(), make_loader(x[:32], y[:32], 16, True), x[:32],
                              (x[32:], y[32:]), SHAPE, config, progress=False), x


@pytest.fixture(scope="module", params=["threshold", "topk", "image"])
def stream(request, tmp_path_factory):
    torch.set_num_threads(1)
    result, x = train("stream", gate=request.param)
    path = tmp_path_factory.mktemp("stream") / "s.onnx"
    export_feature_reg_onnx(result, path, SHAPE)
    return result, path, x


def test_one_gate_per_read_map_on_its_producer_and_shared_readers_share_it():
    gated = GatedModel(residual(), SHAPE, (0.5,), placement="stream")
    sites = {s.name: s.readers for s in gated.sites}
    assert sites == {"0": ["1.conv1"], "1.relu": ["1.conv2"], "1": ["2.conv1", "2.shortcut"],
                     "2.relu": ["2.conv2"]}
    assert all(s.stream for s in gated.sites) and gated.bank.table.shape == (1, 4)
    assert gated.names == ["1.conv1", "1.conv2", "2.conv1", "2.conv2", "2.shortcut"] and gated.first == ["0.0"]
    conv_input = GatedModel(residual(), SHAPE, (0.5,))
    assert [s.name for s in conv_input.sites] == conv_input.names == gated.names


def test_a_map_without_a_producing_module_falls_back_to_a_conv_input_gate():
    gated = GatedModel(residual(FunctionalBlock), SHAPE, (0.5,), placement="stream")
    fallback = [s for s in gated.sites if not s.stream]
    assert [(s.name, s.readers) for s in fallback] == [("1.conv2", ["1.conv2"]), ("2.conv2", ["2.conv2"])]
    assert sum(s.stream for s in gated.sites) == 2


def test_an_unknown_placement_is_one_clear_error():
    with pytest.raises(PimcError, match="--gate-placement"):
        FeatureRegConfig(placement="everywhere").check()
    with pytest.raises(PimcError, match="--gate-placement"):
        GatedModel(residual(), SHAPE, (0.5,), placement="everywhere")


def test_every_reader_of_a_stream_gated_map_reads_the_gated_map():
    gated = GatedModel(residual(), SHAPE, (0.5, 0.8), placement="stream")
    x, _ = data(32)
    calibrate(gated, x)
    seen: dict[str, list[torch.Tensor]] = {}

    def keep(key: str, position: int):
        return lambda m, a, *out: seen.setdefault(key, []).append((*a, *out)[position])

    block1, block2 = gated.model[1], gated.model[2]
    gated.model[0].register_forward_hook(keep("stem", 1))  # registered after the gate: sees its output
    block1.conv1.register_forward_pre_hook(keep("conv1", 0))
    block1.conv2.register_forward_hook(keep("residual", 1))
    block1.relu.register_forward_hook(keep("sum", 0))  # relu(conv2(…) + shortcut(x)) is its second call
    block2.conv1.register_forward_pre_hook(keep("block2", 0))
    block2.shortcut.register_forward_pre_hook(keep("shortcut", 0))
    gated.eval()
    with torch.no_grad():
        gated(torch.from_numpy(x[:8]))
    stem = seen["stem"][0]
    assert float((stem == 0).float().mean()) >= 0.8 - 1e-6 and seen["conv1"][0] is stem
    assert torch.equal(seen["sum"][1], seen["residual"][0] + stem)  # the identity shortcut adds the gated map
    assert seen["block2"][0] is seen["shortcut"][0]
    assert float((seen["block2"][0] == 0).float().mean()) >= 0.8 - 1e-6


def _graph(path) -> tuple[onnx.ModelProto, dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    model = onnx.load(str(path))
    made = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return model, made, readers


def test_the_onnx_add_and_both_shared_readers_read_the_gate_output(stream):
    result, path, _ = stream
    model, made, readers = _graph(path)
    wheres = [n for n in model.graph.node if n.op_type == "Where"]
    assert len(wheres) == len(result.gated.sites) == 4
    adds = [n for n in model.graph.node if n.op_type == "Add" and all(i in made for i in n.input)]
    assert any(made[i].op_type == "Where" for add in adds for i in add.input)  # block 1: x + F(x), x gated
    shared = [w for w in wheres if sorted(r.op_type for r in readers[w.output[0]]) == ["Conv", "Conv"]]
    assert len(shared) == 1  # block 2's conv1 and 1x1 shortcut read one gate
    compare = "Greater" if result.gated.bank.kind == "threshold" else "GreaterOrEqual"
    for where in wheres:
        greater = made[where.input[0]]
        assert greater.op_type == compare and made[greater.input[0]].op_type == "Abs"
        assert made[greater.input[0]].input[0] == where.input[1]
    summary = result.summary()
    assert summary["stream_gates"] == 4 and summary["fallback_gates"] == 0
    if result.gated.bank.kind != "image":
        table = "keep" if result.gated.bank.kind == "topk" else "thresholds"
        assert set(summary[table]) == {"0", "1.relu", "1", "2.relu"}


def test_onnx_matches_the_torch_gated_model_at_every_level(stream):
    result, path, x = stream
    gated = result.gated.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for level in range(len(gated.bank.levels)):
        gated.bank.level = level
        with torch.no_grad():
            expected = gated(torch.from_numpy(x[32:])).numpy()
        got = session.run(None, {"input": x[32:], LEVEL_INPUT: np.array(level, np.int64)})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    gated.bank.level = result.default_level


def _sparsity_notes(path, x: np.ndarray) -> dict[str, dict]:
    model = load_model(str(path))
    feeds = [{"input": x[i:i + 1]} for i in range(len(x))]
    out = get_pass("activation-sparsity")().run(model, PassContext(calibration=feeds, data_spec="test")).model
    return {n.name: ann.node_annotations(n) for n in out.graph.node if n.op_type == "Conv"}


def test_the_stored_map_of_a_stream_gate_is_the_gated_one(stream, tmp_path):
    _, path, x = stream
    notes = _sparsity_notes(path, x[32:])
    assert all("input_stored_zero_fraction" not in n for n in notes.values())
    # the stem writes its gated output: the written map's zeros are its readers' input zeros
    stem = next(n for name, n in notes.items() if "output_zero_fraction" in n and n["input_zero_fraction"] < 0.1)
    readers = [n for n in notes.values() if n["input_zero_fraction"] == stem["output_zero_fraction"]]
    assert readers and stem["output_zero_fraction"] >= 0.4
    # conv-input gates on the same model leave the shared maps ungated in storage
    result, _ = train("conv-input", gate=stream[0].gated.bank.kind)
    plain = tmp_path / "c.onnx"
    export_feature_reg_onnx(result, plain, SHAPE)
    stored = [n for n in _sparsity_notes(plain, x[32:]).values() if "input_stored_zero_fraction" in n]
    assert stored and all(n["input_stored_zero_fraction"] < n["input_zero_fraction"] for n in stored)


def test_a_topk_gate_leaves_at_most_k_channels_at_every_pixel_of_every_image():
    gated = GatedModel(residual(), SHAPE, (0.5, 0.75), placement="stream", gate="topk").eval()
    seen: list[torch.Tensor] = []
    gated.model[1].conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x, _ = data(16)
    # gates on maps of 4, 4, 4 and 6 channels: ⌊(1 − level)·C⌋ kept
    for level, keep in ((0, [2, 2, 2, 3]), (1, [1, 1, 1, 1])):
        gated.bank.level = level
        with torch.no_grad():
            gated(torch.from_numpy(x))
        assert int((seen[-1] != 0).sum(dim=1).max()) <= keep[0]
        assert gated.bank.keep_table[level].tolist() == keep


def test_an_image_gate_meets_the_level_on_every_image():
    gated = GatedModel(residual(), SHAPE, (0.5, 0.75), placement="stream", gate="image").eval()
    seen: list[torch.Tensor] = []
    gated.model[2].conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x, _ = data(8)
    x[:4] *= 10.0  # images of very different scale: a fixed threshold would not give them the same zeros
    for level, fraction in enumerate((0.5, 0.75)):
        gated.bank.level = level
        with torch.no_grad():
            gated(torch.from_numpy(x))
        per_image = (seen[-1] == 0).float().flatten(1).mean(dim=1)
        assert float(per_image.min()) >= fraction - 1e-6
