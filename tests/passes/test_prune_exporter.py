"""ADMM-NN pruning in torch: the projection, the ADMM update, progressive rounds, joint quantization and
the annotated ONNX export (tiny models and epochs; the LeNet-5 runs are ``slow``)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from pimc.compiler import annotations as ann
from pimc.compiler.sessions import make_session
from pimc.compiler.storage import model_storage
from pimc.compiler.workload import constant_value
from pimc.models.train import make_loader
from pimc.passes.prune.config import PruneConfig, PruneSchedule
from pimc.passes.prune.exporter import (
    admm_prune,
    admm_state,
    densities,
    export_pruned_onnx,
    exported_nonzeros,
    layer_densities,
    projection_masks,
    prunable_layers,
    teacher_of,
)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3))


def data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return make_loader(x, y, 16, True, 0), x


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_erk_shares_weight_convs_and_meet_the_density():
    shapes = {"c": (8, 4, 3, 3), "f": (10, 288)}
    d = layer_densities(shapes, {"c": True, "f": False}, 0.1, conv_weight=2.0)
    kept = d["c"] * 288 + d["f"] * 2880
    assert kept == pytest.approx(0.1 * (288 + 2880), rel=1e-6)
    assert d["c"] > d["f"]
    assert densities(PruneConfig(ratio=100.0), 2) == pytest.approx([0.1, 0.01])


@pytest.mark.parametrize("scope", ["erk", "global", "layer"])
def test_projection_keeps_the_requested_count(scope):
    model = tiny()
    layers, _ = prunable_layers(model, PruneConfig())
    weights = {n: x.module.weight.detach() for n, x in layers.items()}
    masks = projection_masks(layers, weights, PruneConfig(ratio=10.0, scope=scope), 0.1)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(w.numel() for w in weights.values())
    assert kept == pytest.approx(total / 10, rel=0.02)
    if scope == "layer":
        assert all(float(m.mean()) == pytest.approx(0.1, abs=0.01) for m in masks.values())


def test_admm_update_is_projection_and_dual_ascent():
    model = tiny()
    layers, _ = prunable_layers(model, PruneConfig())
    config = PruneConfig(ratio=4.0, scope="layer")

    def project(values):
        masks = projection_masks(layers, values, config, 0.25)
        return {n: v * masks[n] for n, v in values.items()}

    state = admm_state(layers, project, PruneSchedule(rho=0.1, rho_growth=1.5), 3, [], "t")
    name = "5"
    with torch.no_grad():
        layers[name].module.weight.add_(0.01)
    w = layers[name].module.weight.detach().clone()
    u_old = state.u[name].clone()
    state.update()
    z = state.z[name]
    assert float((z != 0).float().mean()) == pytest.approx(0.25, abs=0.01)
    assert torch.allclose(state.u[name] * 1.5, u_old + w - z)
    assert state.rho == pytest.approx(0.15)


def test_progressive_pruning_keeps_pruned_weights_pruned_and_exports_annotations(tmp_path):
    loader, x = data()
    model = tiny()
    schedule = PruneSchedule(admm_epochs=1, retrain_epochs=1, steps=2)
    result = admm_prune(model, loader, PruneConfig(ratio=20.0), schedule, progress=False)
    nnz, total = result.nonzeros()
    assert nnz <= total / 20 + 2
    assert {t["phase"] for t in result.trace} == {"1/2", "2/2"}
    out = tmp_path / "p.onnx"
    proto = export_pruned_onnx(model, result, out, (1, 8, 8))
    compute = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) == 4 and all(ann.get_node_annotation(n, "prune") == "admm" for n in compute)
    exported = sum(int(np.count_nonzero(constant_value(proto, n.input[1]))) for n in compute)
    assert exported == exported_nonzeros(proto) < nnz  # shrink dropped the weights of units nothing reads
    assert result.shrunk["channels_removed"] > 0 and result.shrunk["max_abs_err"] is not None
    assert {i.name for i in proto.graph.initializer} <= {x for n in proto.graph.node for x in n.input}
    got = make_session(onnx.load(str(out))).run(None, {"input": x[:4]})[0]
    np.testing.assert_allclose(got, model(torch.from_numpy(x[:4])).detach().numpy(), rtol=1e-4, atol=1e-5)
    result.config.shrink = False
    unshrunk = export_pruned_onnx(model, result, tmp_path / "u.onnx", (1, 8, 8))
    assert exported_nonzeros(unshrunk) == nnz


def test_joint_quantization_puts_survivors_on_the_grid_and_storage_counts_their_bits(tmp_path):
    loader, x = data()
    model = tiny()
    schedule = PruneSchedule(admm_epochs=1, retrain_epochs=1, quantize_bits=3, quantize_epochs=1)
    result = admm_prune(model, loader, PruneConfig(ratio=10.0), schedule, progress=False)
    assert len({t["phase"] for t in result.trace}) == 6  # 5 progressive rounds + quantization
    masks = {n: x.mask.clone() for n, x in result.layers.items()}
    for name, layer in result.layers.items():
        w = layer.module.weight.detach().reshape(layer.module.weight.shape[0], -1)
        levels = w / torch.from_numpy(result.scales[name])[:, None]
        assert torch.allclose(levels, levels.round(), atol=1e-4) and float(levels.abs().max()) <= 3 + 1e-4
        assert not bool((layer.module.weight.detach() != 0)[masks[name] == 0].any())
    out = tmp_path / "q.onnx"
    calibration = [{"input": x[i:i + 1]} for i in range(8)]
    proto = export_pruned_onnx(model, result, out, (1, 8, 8), calibration, bits=3)
    store = model_storage(proto)
    assert all(layer["weight_bits"] == 3 for layer in store["layers"].values())
    assert store["ratio"] > 10


def test_per_layer_quantization_has_one_scale_per_layer_and_storage_counts_it_once(tmp_path):
    loader, x = data()
    model = tiny()
    schedule = PruneSchedule(admm_epochs=1, retrain_epochs=1, steps=1, quantize_bits=3, quantize_epochs=1,
                             quantize_scale="layer", augment_shift=1.0)
    result = admm_prune(model, loader, PruneConfig(ratio=5.0), schedule, progress=False)
    for name, layer in result.layers.items():
        scale = result.scales[name]
        assert scale.shape == (layer.module.weight.shape[0],) and np.unique(scale).size == 1
        levels = layer.module.weight.detach() / float(scale[0])
        assert torch.allclose(levels, levels.round(), atol=1e-4) and float(levels.abs().max()) <= 3 + 1e-4
    proto = export_pruned_onnx(model, result, tmp_path / "q.onnx", (1, 8, 8),
                               [{"input": x[i:i + 1]} for i in range(8)], bits=3)
    store = model_storage(proto)
    assert store["breakdown"]["scales"] == 32 * 4
    assert store["breakdown"]["biases"] == 32 * (6 + 8 + 16 + 3)
    assert store["ratio"] < store["weights_ratio"]


def test_schedule_refuses_unknown_scale_granularity_and_negative_augmentation():
    from pimc.compiler.errors import PimcError

    with pytest.raises(PimcError, match="quantize-scale"):
        PruneSchedule(quantize_scale="tensor").check()
    with pytest.raises(PimcError, match="augment"):
        PruneSchedule(augment_shift=-1.0).check()


def test_dead_units_fold_exactly_into_the_next_bias():
    from pimc.passes.prune.exporter import PruneResult, fold_dead_units

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3), nn.BatchNorm1d(3),
                          nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight[[1, 3]] = 0.0
        model[0].bias[1], model[0].bias[3] = 0.7, -0.4  # live constant, dead (ReLU) constant
        model[3].weight[0] = 0.0  # before a BatchNorm: not foldable
    layers, _ = prunable_layers(model, PruneConfig())
    layers["3"].mask = torch.ones_like(model[3].weight)
    x = torch.randn(8, 6)
    before = model(x)
    folded = fold_dead_units(model, PruneResult(layers, [], PruneConfig()))
    assert folded == {"0": 2}
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert not model[3].weight[:, [1, 3]].any() and not model[0].bias[[1, 3]].any()
    assert not layers["3"].mask[:, [1, 3]].any() and layers["3"].mask[:, 0].all()
    assert model[3].bias.ne(0).all()


@pytest.mark.parametrize(("option", "message"), [
    (["--augment-scale", "1.5"], "--augment-scale"), (["--quantize-scale", "tensor"], "--quantize-scale"),
    (["--threads", "0"], "--threads"), (["--validation", "0"], "--validation"),
    (["--validation", "100000"], "--validation"),
])
def test_cli_refuses_bad_new_options_in_one_line_and_writes_nothing(tmp_path, option, message):
    stderr = _refused(tmp_path, option)
    assert message in stderr and "Traceback" not in stderr


def _refused(tmp_path, option: list[str]) -> str:
    """``pimc export prune ... OPTION`` must fail without writing its output; its stderr."""
    import subprocess
    import sys

    out = tmp_path / "p.onnx"
    proc = subprocess.run([sys.executable, "-m", "pimc", "export", "prune", "--model", "digits_cnn", "-o", str(out),
                           "--no-progress", *option], capture_output=True, text=True)
    assert proc.returncode != 0
    assert not out.exists()
    return proc.stderr


@pytest.mark.parametrize(("option", "message"), [
    (["--distill", "1.5"], "--distill must be in [0, 1], got 1.5"),
    (["--distill", "-0.2"], "--distill must be in [0, 1], got -0.2"),
    (["--distill", "nan"], "--distill must be in [0, 1], got nan"),
    (["--distill", "0.5", "--distill-temperature", "0"], "--distill-temperature must be positive, got 0.0"),
    (["--distill-temperature", "-3"], "--distill-temperature must be positive, got -3.0"),
])
def test_cli_refuses_bad_distillation_in_one_stderr_line(tmp_path, option, message):
    assert _refused(tmp_path, option).strip().splitlines() == [f"pimc: error: {message}"]


def test_distillation_teacher_is_the_dense_model_and_changes_the_pruned_weights():
    loader, _ = data()
    dense = tiny()
    assert teacher_of(dense, PruneSchedule()) is None
    distill = teacher_of(dense, PruneSchedule(distill=0.9, distill_temperature=2.0))
    assert (distill.alpha, distill.temperature) == (0.9, 2.0) and distill.teacher is not dense
    schedule = {"admm_epochs": 1, "retrain_epochs": 1, "steps": 1, "quantize_bits": 3, "quantize_epochs": 1}
    weights = {}
    for alpha in (0.0, 0.9):
        model = tiny()
        admm_prune(model, loader, PruneConfig(ratio=4.0), PruneSchedule(**schedule, distill=alpha), progress=False)
        weights[alpha] = [p.detach().clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(weights[0.0], weights[0.9], strict=True))
    for p, q in zip(distill.teacher.parameters(), dense.parameters(), strict=True):  # a frozen dense copy
        assert torch.equal(p, q) and not p.requires_grad and q.requires_grad
    assert all(torch.count_nonzero(p) == p.numel() for p in distill.teacher.parameters())


def test_cli_summary_records_the_distillation(tmp_path):
    from pimc.cli.main import cli

    common = ["export", "prune", "--model", "digits_cnn", "--epochs", "1", "--admm-epochs", "1", "--retrain-epochs",
              "1", "--steps", "1", "--train-limit", "128", "--ratio", "5", "--no-progress", "--json"]
    runs = {}
    for name, extra in {"plain": [], "kd": ["--distill", "0.5", "--distill-temperature", "3"]}.items():
        result = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / f"{name}.onnx"), *extra])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    assert runs["kd"]["distillation"] == {"alpha": 0.5, "temperature": 3.0}
    assert (runs["kd"]["schedule"]["distill"], runs["kd"]["schedule"]["distill_temperature"]) == (0.5, 3.0)
    assert runs["plain"]["distillation"] == {"alpha": 0.0, "temperature": 4.0}
    assert (tmp_path / "plain.onnx").read_bytes() != (tmp_path / "kd.onnx").read_bytes()


def test_cli_exports_digits_cnn(tmp_path):
    from pimc.cli.main import cli

    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(cli, [
        "export", "prune", "--model", "digits_cnn", "-o", str(out), "--epochs", "1", "--admm-epochs", "1",
        "--retrain-epochs", "1", "--steps", "1", "--train-limit", "128", "--ratio", "5", "--no-progress", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["compression"] >= 4.5
    loaded = onnx.load(str(out))
    assert any(ann.get_node_annotation(n, "sparsity") for n in loaded.graph.node)


def test_validation_is_carved_from_the_training_images(tmp_path):
    from pimc.cli.main import cli
    from pimc.models.train import hold_out, training_data

    data = training_data("digits", (1, 8, 8), 32)
    kept, validation = hold_out(data, 40, 32)
    assert len(kept.train) + len(validation) == len(data.train) and len(kept.test) == len(data.test)
    np.testing.assert_array_equal(validation.x, data.train.x[-40:])
    assert sum(len(y) for _, y in kept.loader) == len(data.train) - 40
    result = CliRunner().invoke(cli, [
        "export", "prune", "--model", "digits_cnn", "-o", str(tmp_path / "p.onnx"), "--dense-output",
        str(tmp_path / "d.onnx"), "--epochs", "1", "--admm-epochs", "1", "--retrain-epochs", "1", "--steps", "1",
        "--train-limit", "128", "--validation", "28", "--ratio", "5", "--no-progress", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["training_samples"] == 100 and summary["validation_samples"] == 28
    assert 0 <= summary["accuracy_validation_pruned"] <= 1 and 0 <= summary["accuracy_validation_dense"] <= 1
    # selection mode: the loss warning judges the validation images, never the test split
    drop = 100 * (summary["accuracy_validation_dense"] - summary["accuracy_validation_pruned"])
    assert len(summary["warnings"]) == (drop > 1.0)
    assert all("the 28 validation images" in w and "test split" not in w for w in summary["warnings"])


def _export_mnist(tmp_path, model: str, *options: str) -> dict:
    """``pimc export prune --model M --data mnist`` (default schedule unless ``options``), summary JSON."""
    from pimc.cli.main import cli

    result = CliRunner().invoke(cli, [
        "export", "prune", "--model", model, "--data", "mnist", "-o", str(tmp_path / "p.onnx"),
        "--dense-output", str(tmp_path / "d.onnx"), "--threads", "1", "--no-progress", "--json", *options,
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # a loss beyond 1 point adds a warning on stderr
    print(model, options, summary["accuracy_dense"], summary["accuracy_pruned"], summary["compression"],
          summary["train_seconds"])
    return summary


@pytest.mark.slow
def test_caffe_lenet5_mnist_246x_3bit_within_one_point_and_its_entropy_coded_storage(tmp_path):
    """Progressive 246x + 3-bit per-layer ADMM quantization (benchmarks/admm_lenet5_mnist.py row 246x-3b-layer,
    a quarter of an hour here): 98.6 % -> 98.1 % measured; the export's shrink leaves a 15-28-119-10 network,
    storage weights + index 978x against the model as brought with the Huffman format (826x with the
    fixed-length indices only), 710x all-in (before shrink: 817x). The >= 1,000x goal within 1 point is not
    reached: on a validation split (--validation 500) every 3-bit model at >= 1,000x lost 1.4-3.0 points."""
    summary = _export_mnist(tmp_path, "lenet5_caffe", "--ratio", "246", "--quantize-bits", "3",
                            "--quantize-scale", "layer")
    assert summary["compression"] >= 245.9
    assert summary["accuracy_dense"] - summary["accuracy_pruned"] <= 0.01
    store = model_storage(onnx.load(str(tmp_path / "p.onnx")))
    assert all(x["format"] == "huffman" for x in store["layers"].values())
    assert store["reference"] != "this model" and store["dense_fp32_bits"] == 32 * (430_500 + 580)
    assert store["weights_ratio"] >= 950 and store["weights_ratio_fixed_length"] >= 800 and store["ratio"] >= 690


@pytest.mark.slow
def test_caffe_lenet5_mnist_350x_3bit_distilled_on_a_validation_split(tmp_path):
    """350x + 3-bit per-layer with --distill 0.9 (T = 4), selection mode --validation 500 (about 6 minutes here):
    380.6x, 1,140x weights + index (before the export's shrink), validation 97.8 % -> 96.0 % (-1.8 points; benchmarks/admm_lenet5_mnist.py row
    350x-3b-layer-kd9, which loads its checkpoint, lost 1.4): the 1-point budget is missed on validation. Asserts
    what was reached, with half a point of slack."""
    summary = _export_mnist(tmp_path, "lenet5_caffe", "--ratio", "350", "--quantize-bits", "3", "--quantize-scale",
                            "layer", "--distill", "0.9", "--validation", "500")
    assert summary["distillation"] == {"alpha": 0.9, "temperature": 4.0}
    assert summary["compression"] >= 370
    store = model_storage(onnx.load(str(tmp_path / "p.onnx")))
    assert store["weights_ratio"] >= 1100
    assert summary["accuracy_validation_dense"] - summary["accuracy_validation_pruned"] <= 0.023


# What the default schedule reached on this machine (seed 0, 1 thread; benchmarks/admm_lenet5_mnist.py): both
# dense models pass 98 % (98.5 %, 98.8 %); ADMM-NN's (Caffe) LeNet-5 keeps its accuracy at 85x (98.8 -> 98.8);
# the classic LeNet-5 keeps only 723 weights at 85x and loses 3.3 points (98.5 -> 95.2): the 1-point goal
# is missed there (asserted: what it reached, minus half a point).
MNIST_85X = {"lenet5": {"dense": 0.98, "pruned": 0.947}, "lenet5_caffe": {"dense": 0.98, "drop": 0.01}}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MNIST_85X))
def test_lenets_mnist_85x(tmp_path, model):
    """The ADMM-NN LeNet command on both LeNets (tens of minutes each): dense >= 98 %, 85x fewer non-zeros."""
    summary = _export_mnist(tmp_path, model)
    expect = MNIST_85X[model]
    assert summary["accuracy_dense"] >= expect["dense"]
    assert summary["compression"] >= 85
    if "drop" in expect:
        assert summary["accuracy_dense"] - summary["accuracy_pruned"] <= expect["drop"]
    else:
        assert summary["accuracy_pruned"] >= expect["pruned"]


@pytest.mark.slow
def test_caffe_lenet5_mnist_246x_progressive_within_one_point(tmp_path):
    """ADMM-NN's progressive 246x on its own LeNet-5 (about an hour here): 98.8 % -> 98.1 % measured."""
    summary = _export_mnist(tmp_path, "lenet5_caffe", "--ratio", "246")
    assert summary["compression"] >= 245.9
    assert summary["accuracy_dense"] - summary["accuracy_pruned"] <= 0.01


@pytest.mark.slow
def test_caffe_lenet5_mnist_85x_3bit_within_one_point_and_its_honest_storage(tmp_path):
    """85x + 3-bit per-layer ADMM quantization (about an hour here): 98.8 % -> 98.9 % measured; storage
    (weights + relative index + scales + biases) 219x before the Huffman format, far from ADMM-NN's 1,910x (see the report: at 85x and
    3 bits even an index-free count stops at 85 * 32 / 3 = 907x)."""
    summary = _export_mnist(tmp_path, "lenet5_caffe", "--quantize-bits", "3", "--quantize-scale", "layer")
    assert summary["compression"] >= 85
    assert summary["accuracy_dense"] - summary["accuracy_pruned"] <= 0.01
    from pimc.compiler.storage import model_storage

    store = model_storage(onnx.load(str(tmp_path / "p.onnx")))
    assert store["breakdown"]["scales"] == 4 * 32
    assert store["ratio"] >= 200


def test_a_loss_beyond_one_point_is_a_warning_on_stderr(capsys):
    from pimc.cli.export.common import emit
    from pimc.cli.export.prune import accuracy_warnings

    assert accuracy_warnings(0.98, 0.975, 85.0) == [] and accuracy_warnings(None, 0.5, 85.0) == []
    [text] = accuracy_warnings(0.982, 0.916, 85.0)
    assert "85x fewer non-zeros lost 6.60 points" in text and "--validation" in text
    emit({"warnings": [text], "value": 1}, True, lambda s: None)
    captured = capsys.readouterr()
    assert captured.err == f"warning: {text}\n" and '"value": 1' in captured.out
