"""Feature Regularization in torch: the quantile threshold, the gates, calibration, the penalty, and the
multi-level ONNX export checked against a numpy oracle on onnxruntime (tiny models, one epoch)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from pimc.compiler.loader import load_model
from pimc.models.train import make_loader
from pimc.passes.feature_reg.config import LEVEL_INPUT, TABLE_NAME, FeatureRegConfig
from pimc.passes.feature_reg.exporter import (
    calibrate,
    export_feature_reg_onnx,
    feature_regularize,
    split_validation,
)
from pimc.passes.feature_reg.gates import GatedModel, channel_l1, floor_margin, quantile_threshold
from pimc.passes.feature_reg.measure import conv_input_zero_fractions, level_metadata

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STANDARD_OPS = {"Conv", "Relu", "Abs", "Greater", "Where", "Gather", "Reshape", "Constant", "Flatten", "Gemm",
                "Add", "MaxPool", "GlobalAveragePool", "BatchNormalization"}


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))


def data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return x, y


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    x, y = data()
    config = FeatureRegConfig(levels=(0.3, 0.6, 0.9), epochs=1, frozen_epochs=1, calibration=32)
    result = feature_regularize(tiny(), make_loader(x[:32], y[:32], 16, True), x[:32], (x[32:], y[32:]),
                                (1, 8, 8), config, progress=False)
    path = tmp_path_factory.mktemp("fr") / "g.onnx"
    export_feature_reg_onnx(result, path, (1, 8, 8))
    return result, path, x


def test_quantile_threshold_zeroes_at_least_the_fraction():
    x = torch.arange(1, 101, dtype=torch.float32).reshape(1, 4, 5, 5)
    t = quantile_threshold(x, 0.7)
    assert float(t) == 70.0 and float((x.abs() <= t).float().mean()) == pytest.approx(0.7)
    assert float(quantile_threshold(x, 0.0)) == 0.0
    relu = torch.tensor([0.0] * 8 + [1.0, 2.0])
    assert float(quantile_threshold(relu, 0.5)) == 0.0  # natural zeros already exceed the target


def test_penalty_is_scale_invariant_and_lower_for_channel_sparse_features():
    dense = torch.ones(2, 8, 3, 3)
    sparse = torch.zeros(2, 8, 3, 3)
    sparse[:, 0] = 1.0
    assert float(channel_l1(dense)) == pytest.approx(1.0)
    assert float(channel_l1(3 * sparse)) == pytest.approx(float(channel_l1(sparse)))
    assert float(channel_l1(sparse)) < 0.5 * float(channel_l1(dense))


def test_gates_skip_the_first_conv_and_keep_the_state_dict():
    model = tiny()
    keys = set(model.state_dict())
    gated = GatedModel(model, (1, 8, 8), (0.5,))
    assert gated.first == ["0"] and gated.names == ["2", "5"]
    assert set(model.state_dict()) == keys


def test_calibration_hits_each_level_on_the_calibration_images():
    x, _ = data(64)
    gated = GatedModel(tiny(), (1, 8, 8), (0.5, 0.8, 0.95))
    calibrate(gated, x)
    seen: list[torch.Tensor] = []
    hooks = [conv.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for _, conv in gated.gated]
    gated.eval()
    for level, target in enumerate(gated.bank.levels):
        seen.clear()
        gated.bank.level = level
        with torch.no_grad():
            gated(torch.from_numpy(x))
        # the pre-hooks registered after the gates see the gated inputs
        for tensor in seen:
            assert float((tensor == 0).float().mean()) >= target - 1e-6
    for h in hooks:
        h.remove()


def test_floor_margin_is_z_standard_errors_of_the_per_image_zero_fractions():
    x = torch.zeros(4, 1, 2, 5)
    x[:, 0, 0] = torch.arange(1, 6, dtype=torch.float32)  # per image: 5 zeros of 10, then 1..5
    x[1] *= 10.0  # image 1's values are larger
    t = torch.tensor(3.0)
    per_image = torch.tensor([0.8, 0.5, 0.8, 0.8])  # |x| <= 3 share of each image
    expected = 2.0 * float(per_image.std()) / 2.0
    assert floor_margin(x, t, 2.0) == pytest.approx(expected)
    assert floor_margin(x[:1], t, 2.0) == 0.0


def test_calibration_floor_sits_above_the_level_on_the_calibration_images():
    x, _ = data(64)
    exact, floored = (GatedModel(tiny(), (1, 8, 8), (0.5,)) for _ in range(2))
    calibrate(exact, x)
    calibrate(floored, x, floor_z=2.0)
    assert floored.bank.floor_z == 0.0 and floored.bank.mode == "fixed"
    assert bool((floored.bank.table >= exact.bank.table).all()) and bool((floored.bank.table > exact.bank.table).any())


def test_split_validation_is_disjoint_and_seeded():
    fit, held = split_validation(100, 0.2, 3)
    assert len(held) == 20 and not set(fit) & set(held) and len(fit) + len(held) == 100
    assert np.array_equal(split_validation(100, 0.2, 3)[1], held)


def test_export_uses_standard_ops_and_a_defaulted_level_input(exported):
    result, path, _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in model.graph.node} <= STANDARD_OPS
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    inputs = {i.name: i for i in model.graph.input}
    assert set(inputs) == {"input", LEVEL_INPUT}
    assert inputs[LEVEL_INPUT].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert len(inputs[LEVEL_INPUT].type.tensor_type.shape.dim) == 0
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert int(inits[LEVEL_INPUT]) == result.default_level
    assert np.allclose(inits[TABLE_NAME], result.gated.bank.table.numpy())
    meta = level_metadata(path)
    assert meta["levels"] == [0.3, 0.6, 0.9] and meta["default_level"] == result.default_level
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]  # the level is optional


def test_gates_zero_exactly_what_the_threshold_says(exported):
    """numpy oracle: every Where output equals x·1(|x| > t), and the thresholds read are the level's row."""
    result, path, x = exported
    model = onnx.load(str(path))
    wheres = [n for n in model.graph.node if n.op_type == "Where"]
    producers = {o: n for n in model.graph.node for o in n.output}
    thresholds = [producers[w.input[0]].input[1] for w in wheres]  # Greater(Abs(x), t)
    watch = [name for w, t in zip(wheres, thresholds, strict=True) for name in (w.input[1], t, w.output[0])]
    for name in watch:
        model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    table = result.gated.bank.table.numpy()
    for level in range(len(result.gated.bank.levels)):
        values = session.run(watch, {"input": x, LEVEL_INPUT: np.array(level, np.int64)})
        used = []
        for i in range(len(wheres)):
            before, t, after = values[3 * i: 3 * i + 3]
            assert t.shape == ()
            np.testing.assert_array_equal(after, np.where(np.abs(before) > t, before, 0.0))
            used.append(float(t))
        np.testing.assert_allclose(sorted(used), sorted(table[level]), rtol=0, atol=0)


def test_onnxruntime_matches_torch_at_every_level(exported):
    result, path, x = exported
    x = x[32:]  # not the calibration images, whose values are the thresholds themselves
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gated = result.gated
    for level in range(len(gated.bank.levels)):
        gated.bank.level = level
        with torch.no_grad():
            expected = gated(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x, LEVEL_INPUT: np.array(level, np.int64)})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    gated.bank.level = result.default_level
    default = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(default, session.run(None, {"input": x, LEVEL_INPUT: np.array(
        result.default_level, np.int64)})[0])


def test_level_input_raises_sparsity_monotonically(exported):
    _, path, x = exported
    means = []
    for level in range(3):
        fractions = conv_input_zero_fractions(path, x, level)
        gated = list(fractions.values())[1:]
        means.append(np.mean(gated))
    assert means[0] < means[1] < means[2]
    assert means[2] >= 0.85


def test_loader_keeps_the_level_input_and_does_not_fold_the_table(exported):
    _, path, _ = exported
    model = load_model(path)
    assert [i.name for i in model.graph.input] == ["input", LEVEL_INPUT]
    assert sum(n.op_type == "Gather" for n in model.graph.node) >= 2
    assert any(t.name == TABLE_NAME for t in model.graph.initializer)


def test_a_model_without_a_second_conv_is_refused():
    from pimc.compiler.errors import PimcError

    with pytest.raises(PimcError, match="nothing to gate"):
        GatedModel(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)), (1, 8, 8), (0.5,))


@pytest.mark.parametrize("levels", [(), (0.9, 0.5), (0.5, 1.0), (-0.1,)])
def test_bad_levels_are_refused(levels):
    from pimc.compiler.errors import PimcError

    with pytest.raises(PimcError, match="levels"):
        FeatureRegConfig(levels=levels).check()
