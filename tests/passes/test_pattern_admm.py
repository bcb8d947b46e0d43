"""ADMM / one-shot pattern pruning in torch and its annotated ONNX export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pimc.compiler import annotations as ann
from pimc.compiler.passbase import PassContext, get_pass
from pimc.compiler.sessions import make_session
from pimc.models.train import make_loader
from pimc.passes.pattern.admm import (
    AdmmSchedule,
    admm_prune,
    admm_state,
    export_pattern_onnx,
    oneshot_prune,
    prepare,
)
from pimc.passes.pattern.config import PatternConfig


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )


def data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return make_loader(x, y, 16, True, 0), x


def conforming(weight: torch.Tensor, library: list[list[int]], nonzeros: int, connectivity: float) -> bool:
    kernels = weight.detach().reshape(-1, weight.shape[2] * weight.shape[3]).numpy()
    supports = [set(np.flatnonzero(k)) for k in kernels]
    zero = sum(not s for s in supports)
    fits = all(not s or any(s <= set(p) for p in library) for s in supports)
    return fits and max(len(s) for s in supports) <= nonzeros and zero >= int(connectivity * len(kernels))


@pytest.mark.parametrize("mode", ["admm", "oneshot"])
def test_pruned_weights_conform_and_export_is_recognised(tmp_path, mode):
    model = tiny()
    loader, x = data()
    config = PatternConfig(patterns=4, connectivity=0.5)
    if mode == "admm":
        result = admm_prune(model, loader, config, AdmmSchedule(admm_epochs=2, retrain_epochs=1, rho=1e-2, rho_growth=2.0, update_every=2),
                            progress=False)
        assert len(result.trace) == 3 and result.trace[1]["rho"] == pytest.approx(2e-2)
    else:
        result = oneshot_prune(model, loader, config, finetune_epochs=1, progress=False)
    assert set(result.layers) == {"0", "3"}
    assert {s["node"]: s["reason"] for s in result.skipped}.keys() == {"5", "6"}
    for layer in result.layers.values():
        assert conforming(layer.module.weight, layer.library, 4, 0.5)

    path = tmp_path / "p.onnx"
    proto, stats = export_pattern_onnx(model, result, path, (1, 8, 8))
    assert not any(v["weights_changed"] for v in stats["layers"].values())
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    annotated = [n for n in loaded.graph.node if ann.get_node_annotation(n, "pattern_library")]
    assert len(annotated) == 2
    for n in annotated:
        ids = ann.get_node_map(loaded, n, "pattern")
        assert ids.dtype == np.int16 and (ids == -1).mean() >= 0.5
    again = get_pass("pattern-prune")(patterns=4, connectivity=0.5, include=[n.name for n in annotated])
    assert not again.run(loaded, PassContext()).changed

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x[:8])).numpy()
    got = make_session(loaded).run(None, {"input": x[:8]})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_admm_update_is_projection_and_dual_ascent():
    model = tiny()
    config = PatternConfig(patterns=2, connectivity=0.25)
    result = prepare(model, config)
    state = admm_state(result, AdmmSchedule(rho=0.1, rho_growth=1.5), steps_per_epoch=1)
    layer = result.layers["3"]
    with torch.no_grad():
        layer.module.weight.add_(0.05)
    w = layer.module.weight.detach().clone()
    u_old = state.u["3"].clone()
    state.update()
    z = state.z["3"]
    assert conforming(z, layer.library, 4, 0.25)
    assert torch.allclose(state.u["3"] * 1.5, u_old + w - z)
    assert state.rho == pytest.approx(0.15)
    penalty = state.penalty(model)
    assert penalty.requires_grad and float(penalty.detach()) > 0


def test_cli_exports_digits_cnn(tmp_path):
    from pimc.cli.main import cli

    out = tmp_path / "d.onnx"
    result = CliRunner().invoke(cli, [
        "export", "pattern", "--model", "digits_cnn", "-o", str(out), "--epochs", "1", "--admm-epochs", "1",
        "--retrain-epochs", "1", "--train-limit", "128", "--connectivity", "0.5", "--no-progress", "--json",
        "--dense-output", str(tmp_path / "dense.onnx"),
    ])
    assert result.exit_code == 0, result.output
    assert '"conv_compression"' in result.output
    loaded = onnx.load(str(out))
    assert sum(1 for n in loaded.graph.node if ann.get_node_annotation(n, "pattern_nonzeros") == 4) == 3
