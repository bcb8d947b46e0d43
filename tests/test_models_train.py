"""Training helpers, ONNX export parity (legacy and dynamo), the bundled model and `pimc models`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from pimc.cli.models import models_group
from pimc.compiler.errors import PimcError
from pimc.models import bundled_model_path
from pimc.models.train import (
    Distillation,
    digits_arrays,
    distillation_loss,
    evaluate_torch,
    export_onnx,
    frozen_copy,
    make_loader,
    train_classifier,
)
from pimc.models.zoo import build_model
from pimc.runtime.datasets import load_dataset
from pimc.runtime.session import evaluate


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so export has to fold them for real."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20")
    _randomise_batchnorm(model)
    return model.eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_export_matches_torch(resnet20: torch.nn.Module, tmp_path: Path, dynamo: bool) -> None:
    path = export_onnx(resnet20, tmp_path / "r20.onnx", (3, 32, 32), dynamo=dynamo)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Conv"] == 21 and "BatchNormalization" not in ops and "Identity" not in ops
    assert proto.opset_import[0].version == (18 if dynamo else 17)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = resnet20(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4, rtol=0)
    assert not list(tmp_path.glob(".*.tmp"))


def test_dynamo_rejects_old_opset(tmp_path: Path) -> None:
    with pytest.raises(PimcError, match="opset 18"):
        export_onnx(build_model("digits_cnn"), tmp_path / "d.onnx", (1, 8, 8), dynamo=True, opset=17)


def test_train_is_deterministic_and_learns() -> None:
    x, y = digits_arrays((1, 8, 8), "train")
    xt, yt = digits_arrays((1, 8, 8), "test")
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("digits_cnn")
        losses = train_classifier(model, make_loader(x[:512], y[:512], 64, True, 0), 3, lr=1e-2, progress=False)
        results.append((losses, evaluate_torch(model, xt, yt)))
    assert results[0] == results[1]
    assert results[0][0][-1] < results[0][0][0]
    assert results[0][1] > 0.6


def test_after_step_and_extra_loss_are_called() -> None:
    x, y = digits_arrays((1, 8, 8), "train")
    calls = {"extra": 0, "after": 0}

    def extra(model: torch.nn.Module) -> torch.Tensor:
        calls["extra"] += 1
        return sum(p.abs().sum() for p in model.parameters()) * 1e-6

    def after(model: torch.nn.Module) -> None:
        calls["after"] += 1
        model.fc.weight[:, 0] = 0.0

    model = build_model("digits_cnn")
    train_classifier(model, make_loader(x[:128], y[:128], 64, True), 1, progress=False, extra_loss=extra,
                     after_step=after)
    assert calls == {"extra": 2, "after": 2}
    assert torch.all(model.fc.weight[:, 0] == 0)


def test_train_rejects_bad_epochs() -> None:
    x, y = digits_arrays((1, 8, 8), "train")
    with pytest.raises(PimcError, match="epochs"):
        train_classifier(build_model("digits_cnn"), make_loader(x, y, 64, False), 0, progress=False)


def test_bundled_model_accuracy() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.stat().st_size < 300_000
    result = evaluate(path, load_dataset("digits", (1, 8, 8)))
    assert result["samples"] == 450
    assert result["accuracy"] >= 0.95


def test_models_cli_list_and_export(tmp_path: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(models_group, ["list"])
    assert listing.exit_code == 0 and "resnet50" in listing.output
    out = tmp_path / "lenet.onnx"
    res = runner.invoke(models_group, ["export", "lenet5", "-o", str(out), "--opset", "13"])
    assert res.exit_code == 0, res.output
    assert onnx.load(out).opset_import[0].version == 13
    res = runner.invoke(models_group, ["export", "nope", "-o", str(out)])
    assert isinstance(res.exception, PimcError)


def test_models_cli_train(tmp_path: Path) -> None:
    out = tmp_path / "d.onnx"
    res = CliRunner().invoke(models_group, ["train", "digits_cnn", "--data", "digits", "-o", str(out),
                                            "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and out.is_file()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


STUDENT = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
TEACHER = np.array([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
TARGETS = np.array([0, 1])


def _hand_ce() -> float:
    return float(-np.log(_softmax(STUDENT)[[0, 1], TARGETS]).mean())


def _hand_kl(temperature: float) -> float:
    """KL(p_t ‖ p_s) of the softened distributions, summed over classes, averaged over the batch."""
    p_t, p_s = _softmax(TEACHER / temperature), _softmax(STUDENT / temperature)
    return float((p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean())


def _kd(alpha: float, temperature: float) -> torch.Tensor:
    return distillation_loss(torch.tensor(STUDENT, requires_grad=True), torch.tensor(TEACHER),
                             torch.tensor(TARGETS), alpha, temperature).detach()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_loss_is_the_hand_computed_mix_of_cross_entropy_and_scaled_kl(temperature: float) -> None:
    assert float(_kd(0.0, temperature)) == pytest.approx(_hand_ce(), rel=1e-6)
    assert float(_kd(1.0, temperature)) == pytest.approx(temperature**2 * _hand_kl(temperature), rel=1e-6)
    mixed = 0.3 * _hand_ce() + 0.7 * temperature**2 * _hand_kl(temperature)
    assert float(_kd(0.7, temperature)) == pytest.approx(mixed, rel=1e-6)


def test_distillation_gradient_pulls_the_student_towards_the_teacher() -> None:
    """d/ds of T²·KL(softmax(t/T) ‖ softmax(s/T)) averaged over B rows is T·(p_s − p_t)/B: a descent step
    raises the logits of the classes the teacher prefers."""
    temperature = 2.0
    student = torch.tensor(STUDENT, requires_grad=True)
    distillation_loss(student, torch.tensor(TEACHER), torch.tensor(TARGETS), 1.0, temperature).backward()
    p_t, p_s = _softmax(TEACHER / temperature), _softmax(STUDENT / temperature)
    expected = temperature * (p_s - p_t) / len(STUDENT)
    np.testing.assert_allclose(student.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert student.grad[0, 1] < 0 and student.grad[0, 0] > 0  # the teacher's class 1 up, the student's 0 down
    stepped = STUDENT - 0.5 * student.grad.numpy()
    kl = lambda s: (p_t * (np.log(p_t) - np.log(_softmax(s / temperature)))).sum()  # noqa: E731
    assert kl(stepped) < kl(STUDENT)


def test_distillation_teacher_is_frozen_in_eval_mode_and_training_follows_it() -> None:
    torch.manual_seed(0)
    dense = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    teacher = frozen_copy(dense.train())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert dense.training and all(p.requires_grad for p in dense.parameters())
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))  # labels the teacher ignores
    distill = Distillation(teacher, 1.0, 1.0)
    first = distill.loss(torch.zeros(64, 3), x, y)
    assert float(first) == pytest.approx(float(distill.loss(torch.zeros(64, 3), x, y)))  # no dropout
    student = torch.nn.Linear(4, 3)
    with torch.no_grad():
        before = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    losses = train_classifier(student, make_loader(x.numpy(), y.numpy(), 16, True), 30, lr=3e-2, progress=False,
                              distill=distill)
    with torch.no_grad():
        after = float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())
    assert losses[-1] < 0.2 * losses[0] and after >= 0.95 > before
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(("alpha", "temperature", "message"), [
    (1.5, 4.0, "alpha"), (-0.1, 4.0, "alpha"), (float("nan"), 4.0, "alpha"), (0.5, 0.0, "temperature"),
    (0.5, float("inf"), "temperature"),
])
def test_distillation_rejects_bad_weight_and_temperature(alpha: float, temperature: float, message: str) -> None:
    with pytest.raises(PimcError, match=message):
        Distillation(torch.nn.Linear(2, 2), alpha, temperature)
