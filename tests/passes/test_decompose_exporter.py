"""PENNI exporter: DecomposedConv2d equals the conv, the two-conv export matches torch, pruning masks hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pimc.compiler.annotations import get_node_annotation
from pimc.compiler.verify import run_model
from pimc.passes.decompose.exporter import (
    DecomposedConv2d,
    PenniConfig,
    decomposed_layers,
    export_penni,
    penni_compress,
    replace_convs,
)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def test_full_rank_module_equals_conv_in_both_forms():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    layer = DecomposedConv2d(conv, rank=6)
    x = torch.randn(2, 3, 9, 10)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)
    layer.two_conv = True
    torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=1e-5)


def test_normalize_basis_keeps_the_kernel():
    layer = DecomposedConv2d(nn.Conv2d(4, 4, 3), rank=3)
    with torch.no_grad():
        layer.basis.mul_(3.0)
    before = layer.dense_weight().detach().clone()
    layer.normalize_basis()
    torch.testing.assert_close(layer.dense_weight(), before)
    norms = layer.basis.reshape(3, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))


def test_replace_skips_pointwise_and_reports_empty_models():
    net = small_net()
    replaced = replace_convs(net, rank=4)
    assert sorted(replaced) == ["0", "3"]
    with pytest.raises(Exception, match="no Conv2d"):
        replace_convs(nn.Sequential(nn.Conv2d(2, 2, 1)))


def test_train_prune_export_matches_torch(tmp_path):
    net = small_net()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 2, 8, 8, generator=gen)
    y = torch.randint(0, 3, (48,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    stats = penni_compress(net, loader, PenniConfig(rank=4, epochs=2, swap_every=1, finetune_epochs=1,
                                                    threshold=1.0, progress=False))
    assert stats["layers"] == 2 and stats["decomposed_params"] < stats["decomposed_dense_params"]
    for layer in decomposed_layers(net).values():
        assert torch.all(layer.coefficient[layer.mask == 0] == 0)
        assert float(layer.mask.mean()) < 1.0
    proto = export_penni(net, tmp_path / "m.onnx", (2, 8, 8))
    roles = [get_node_annotation(n, "role") for n in proto.graph.node if n.op_type == "Conv"]
    assert roles.count("basis") == 2 and roles.count("coefficient") == 2
    probe = np.random.default_rng(0).standard_normal((4, 2, 8, 8)).astype(np.float32)
    (onnx_out,) = run_model(proto, [{"input": probe}])[0]
    with torch.no_grad():
        torch_out = net.eval()(torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cli_digits_cnn_compiles_for_both_targets(tmp_path):
    from click.testing import CliRunner

    from pimc.app.compile import CompileOptions, compile_model
    from pimc.cli.export.decompose import command

    out = tmp_path / "d.onnx"
    result = CliRunner().invoke(command, ["--model", "digits_cnn", "-o", str(out), "--pretrain-epochs", "2",
                                          "--epochs", "2", "--finetune-epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    for target in ("onnxruntime", "escalate"):
        model, _ = compile_model(CompileOptions(input=str(out), target=target, output=str(tmp_path / f"{target}.onnx"),
                                                verify=True))
        assert run_model(model, [{"input": np.zeros((1, 1, 8, 8), np.float32)}])


def test_group_prune_zeroes_whole_slices():
    torch.manual_seed(2)
    layer = DecomposedConv2d(nn.Conv2d(4, 5, 3), rank=3)
    with torch.no_grad():
        layer.coefficient.copy_(torch.randn(5, 4, 3).sign() * (1 + torch.rand(5, 4, 3)))
        layer.coefficient[2] *= 0.05  # filter 2 weak as a whole
        layer.coefficient[:, 1] *= 0.05  # input channel 1 weak as a whole
    layer.prune(threshold=0.0, group_threshold=0.5)
    assert layer.dead_outputs().tolist() == [False, False, True, False, False]
    assert torch.all(layer.mask[:, 1] == 0) and int(layer.mask.sum()) == 4 * 3 * 3
    layer.prune(threshold=0.0, group_threshold=0.5)  # pruned slices count as 0: a second round is stable
    assert int(layer.mask.sum()) == 4 * 3 * 3
    layer.prune(threshold=0.0, group_threshold=100.0)  # the largest coefficient always survives
    assert int(layer.mask.sum()) == 1


def test_sparsity_penalty_is_l1_plus_slice_norms():
    from pimc.passes.decompose.exporter import sparsity_penalty

    layer = DecomposedConv2d(nn.Conv2d(3, 2, 3), rank=2)
    with torch.no_grad():
        layer.coefficient.copy_(torch.arange(12, dtype=torch.float32).reshape(2, 3, 2) - 5)
    c = layer.coefficient.detach().double()
    expected = 0.1 * c.abs().sum() + 0.01 * (c.square().sum((1, 2)).sqrt().sum() + c.square().sum((0, 2)).sqrt().sum())
    got = sparsity_penalty({"l": layer}, 0.1, 0.01)
    assert abs(float(got.detach()) - float(expected)) < 1e-4
    assert sparsity_penalty({"l": layer}, 0.0, 0.0) is None


def test_dead_filters_become_zero_and_shrink_removes_them_exactly(tmp_path):
    from pimc.passes.decompose.exporter import find_followers

    net = small_net()
    layers = replace_convs(net, rank=4)
    assert find_followers(net, layers, torch.randn(2, 2, 8, 8)) == {"0": net[1]}
    with torch.no_grad():
        layers["0"].mask[[1, 5]] = 0  # filters 1 and 5 of conv 0 dead: BN 1 must output 0
        layers["3"].mask[[2]] = 0  # filter 2 of conv 3 dead: its bias must become 0
        net[1].bias.fill_(0.3)
        layers["3"].bias.fill_(0.2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 8, 8, generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.randint(0, 3, (32,), generator=gen)),
                                         batch_size=16)
    stats = penni_compress(net, loader, PenniConfig(rank=4, epochs=1, finetune_epochs=1, threshold=0.0,
                                                    group_threshold=0.0, progress=False))
    assert stats["dead_filters"] == {"0": 2, "3": 1}
    assert torch.all(net[1].weight[[1, 5]] == 0) and torch.all(net[1].bias[[1, 5]] == 0)
    assert float(layers["3"].bias.detach()[2]) == 0.0 and float(layers["3"].bias.detach()[0]) != 0.0
    proto = export_penni(net, tmp_path / "m.onnx", (2, 8, 8))
    coefs = [get_initializer_shape(proto, n) for n in proto.graph.node if get_node_annotation(n, "role") == "coefficient"]
    assert [c[0] for c in coefs] == [6, 7]  # the dead filters are gone from the exported graph
    probe = np.random.default_rng(1).standard_normal((3, 2, 8, 8)).astype(np.float32)
    (onnx_out,) = run_model(proto, [{"input": probe}])[0]
    with torch.no_grad():
        torch_out = net.eval()(torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)


def get_initializer_shape(proto, node):
    from pimc.compiler.graph import get_initializer

    return get_initializer(proto.graph, node.input[1]).shape


class ResidualNet(nn.Module):
    """Stem + one identity block + one projection block: two residual streams of 6 and 8 channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.a1, self.b1 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.a2, self.b2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.proj = nn.Sequential(nn.Conv2d(6, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.b1(self.a1(x)) + x)
        x = torch.relu(self.b2(self.a2(x)) + self.proj(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_residual_streams_are_found_generically():
    from pimc.passes.decompose.exporter import find_residual_spaces

    net = ResidualNet()
    layers = replace_convs(net, rank=4)
    spaces, note = find_residual_spaces(net)
    assert note is None
    by_width = {s.channels: s for s in spaces}
    assert sorted(by_width) == [6, 8]
    assert by_width[6].writers == [layers["stem.0"], layers["a1"]]
    assert by_width[6].readers == [layers["a1"], layers["a2"]] and by_width[6].norms == [net.stem[1], net.b1]
    assert by_width[8].writers == [layers["a2"], net.proj[0]] and by_width[8].readers == []
    assert find_residual_spaces(nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU()))[0] == []

    class Gated(ResidualNet):  # a stream fed by an op the grouping cannot zero is left out
        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(self.b1(self.a1(x)) + x * 2.0)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x[:, :1].expand(-1, 8, -1, -1), 1), 1))

    gated = Gated()
    replace_convs(gated, rank=4)
    assert find_residual_spaces(gated)[0] == []


def test_residual_channels_die_in_every_writer_and_shrink_removes_them(tmp_path):
    from pimc.passes.decompose.exporter import find_residual_spaces, sparsity_penalty

    net = ResidualNet()
    layers = replace_convs(net, rank=4)
    spaces, _ = find_residual_spaces(net)
    stream = next(s for s in spaces if s.channels == 6)
    with torch.no_grad():
        for writer in stream.writers:
            writer.coefficient[[2, 4]] *= 0.01
        for reader in stream.readers:
            reader.coefficient[:, [2, 4]] *= 0.01
    norms = stream.group_norms().detach()
    expected = sum(w.coefficient[:, :, :].detach().square().sum((1, 2)) for w in stream.writers)
    expected = (expected + sum(r.coefficient.detach().square().sum((0, 2)) for r in stream.readers)).sqrt()
    torch.testing.assert_close(norms, expected, atol=1e-5, rtol=1e-5)
    penalty = sparsity_penalty(layers, 0.0, 0.0, spaces, 0.5)
    assert abs(float(penalty.detach()) - 0.5 * sum(float(s.group_norms().detach().sum()) for s in spaces)) < 1e-4
    assert stream.prune(0.3) == 2 and stream.dead.nonzero().flatten().tolist() == [2, 4]
    with torch.no_grad():
        for bn in stream.norms:
            bn.running_var.uniform_(0.5, 2.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 8, 8, generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.randint(0, 3, (32,), generator=gen)),
                                         batch_size=16)
    stats = penni_compress(net, loader, PenniConfig(rank=4, epochs=2, swap_every=1, finetune_epochs=1, threshold=0.0,
                                                    group_threshold=0.0, residual_l1=1e-2, residual_threshold=0.3,
                                                    prune_rounds=2, progress=False))
    dead6 = next(s for s in stats["residual_streams"] if s["channels"] == 6)["dead"]
    assert dead6 >= 2
    probe = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 2, 8, 8)).astype(np.float32))
    with torch.no_grad():
        stream_out = net.eval().stem(probe)
        assert torch.all(stream_out[:, [2, 4]] == 0)
        torch_out = net(probe).numpy()
    proto = export_penni(net, tmp_path / "m.onnx", (2, 8, 8))
    widths = [get_initializer_shape(proto, n)[0] for n in proto.graph.node
              if get_node_annotation(n, "role") == "coefficient"]
    assert widths[0] == widths[1] == 6 - dead6  # stem and a1 (graph order): the channels left the whole stream
    (onnx_out,) = run_model(proto, [{"input": probe.numpy()}])[0]
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)
