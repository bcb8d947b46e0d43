"""Quantization-aware exporter: STE fake quant, ADMM projection, and the exported QDQ ONNX."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from pimc.cli.export.quantize import command, run_export
from pimc.compiler import annotations as ann
from pimc.passes.quantize import qat


def test_fake_quant_weight_is_on_grid_with_identity_gradient():
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    q = qat.fake_quant_weight(w, 4)
    scale = w.detach().abs().flatten(1).amax(1) / 7
    codes = q.detach() / scale.view(-1, 1, 1, 1)
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    assert codes.abs().max() <= 7 + 1e-4
    q.sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))


def test_activation_fake_quant_clips_gradient_outside_the_range():
    fq = qat.ActFakeQuant(4)
    fq.train()
    fq(torch.linspace(-1, 3, 100))
    fq.eval()
    x = torch.tensor([-5.0, 0.3, 1.7, 9.0], requires_grad=True)
    y = fq(x)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert len(torch.unique(fq(torch.linspace(-2, 4, 1000)))) <= 16


def test_admm_projection_levels_and_search():
    torch.manual_seed(0)
    w = torch.randn(6, 40)
    z, q = qat.project(w, 3)
    levels = z / q[:, None]
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-5)
    assert levels.abs().max() <= 3
    naive_q = w.abs().amax(1) / 3
    naive = torch.clamp(torch.round(w / naive_q[:, None]), -3, 3) * naive_q[:, None]
    assert ((z - w) ** 2).sum() <= ((naive - w) ** 2).sum() + 1e-6


def test_admm_iteration_pulls_weights_to_the_set():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    net = torch.nn.Sequential(layer)
    admm = qat.ADMMQuantizer(net, 2, rho=1.0, growth=1.0, interval=10)
    start = admm.residual()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        admm.penalty(net).backward()
        opt.step()
        admm.after_step(net)
    assert start > 0.2 and admm.residual() < 0.01


def test_qat_export_reproduces_the_fake_quant_torch_model(tmp_path):
    from pimc.compiler.sessions import make_session
    from pimc.models.zoo import build_model
    from pimc.runtime.datasets import load_dataset

    torch.manual_seed(0)
    net = qat.fold_batchnorm(build_model("digits_cnn"))
    state = qat.attach_qat(net, bits=3, act_bits=6)
    x = torch.from_numpy(load_dataset("digits", (1, 8, 8), split="train").x[:128])
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    with torch.no_grad():
        reference = net(x).numpy()
    qat.detach_qat(net, state)
    model = qat.write_quantized_onnx(net, state, tmp_path / "q.onnx", (1, 8, 8), [])
    onnx.checker.check_model(model, full_check=True)
    got = make_session(model).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - reference).max() <= 0.02 * np.abs(reference).max()
    for node in (n for n in model.graph.node if n.op_type in ("Conv", "Gemm")):
        assert ann.get_node_annotation(node, "weight_bits") == 3
        assert ann.get_node_annotation(node, "act_bits") == 6


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["qat", "admm"])
def test_export_writes_qdq_with_annotations_and_matches_torch(tmp_path, mode):
    out = tmp_path / f"{mode}.onnx"
    args = ["--model", "digits_cnn", "-o", str(out), "--bits", "4", "--act-bits", "8", "--mode", mode, "--epochs", "3",
            "--quant-epochs", "2", "--retrain-epochs", "1", "--no-progress", "--calibration-samples", "64"]
    result = run_export(**command.make_context("quantize", args).params)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(compute) == 4
    for node in compute:
        assert ann.get_node_annotation(node, "weight_bits") == 4
        assert ann.get_node_annotation(node, "act_bits") == 8
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in compute:
        codes = inits[dq[node.input[1]].input[0]]
        assert np.abs(codes).max() <= 7
    assert abs(result["onnx_accuracy"] - result["quantized_accuracy_torch"]) <= 0.02
