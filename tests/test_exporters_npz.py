"""Every exporter and ``pimc models train`` trains on npz:PATH's train part and tests on its test part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from pimc.cli.main import main
from pimc.compiler.storage import model_storage


def _npz(path: Path, count: int = 60, labels: bool = True) -> str:
    rng = np.random.default_rng(0)
    y = np.arange(count) % 10
    x = rng.standard_normal((count, 1, 8, 8)).astype(np.float32) * 0.1 + y[:, None, None, None] / 10
    np.savez(path, **({"x": x, "y": y} if labels else {"x": x}))
    return f"npz:{path}"


COMMANDS = {
    "models-train": ["models", "train", "digits_cnn", "--epochs", "1"],
    "quantize": ["export", "quantize", "--model", "digits_cnn", "--epochs", "1", "--quant-epochs", "1"],
    "comparator": ["export", "comparator", "--model", "digits_cnn", "--epochs", "1", "--anchors", "2"],
    "pattern": ["export", "pattern", "--model", "digits_cnn", "--epochs", "1", "--admm-epochs", "1",
                "--retrain-epochs", "1", "--no-progress"],
    "decompose": ["export", "decompose", "--model", "digits_cnn", "--pretrain-epochs", "1", "--epochs", "1",
                  "--finetune-epochs", "1", "--no-progress"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_exporter_trains_on_npz(name: str, tmp_path: Path, capsys, single_torch_thread) -> None:
    spec = _npz(tmp_path / "d.npz")
    out = tmp_path / "m.onnx"
    code = main([*COMMANDS[name], "--data", spec, "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file()
    if name in ("models-train", "comparator"):
        assert "on 12 samples" in captured.out  # the fixed 20 % test part of 60
    if name != "models-train":  # the storage reference is the dense CNN, not what the exporter made of it
        store = model_storage(onnx.load(str(out)))
        assert store["reference"] != "this model" and store["dense_fp32_bits"] == _dense_digits_cnn_bits()


def _dense_digits_cnn_bits() -> float:
    """digits_cnn's Conv/Linear weights, each output with a bias once BatchNorm is folded, at 32 bits."""
    from torch import nn

    from pimc.models.zoo import build_model

    layers = [m for m in build_model("digits_cnn").modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return 32.0 * sum(m.weight.numel() + m.weight.shape[0] for m in layers)


@pytest.mark.parametrize("name", ["models-train", "quantize", "comparator"])
@pytest.mark.parametrize("kind", ["random", "unlabelled", "emnist"])
def test_exporter_rejects_unlabelled_data_in_one_line(name: str, kind: str, tmp_path: Path, capsys) -> None:
    spec = {"random": "random", "emnist": "emnist", "unlabelled": _npz(tmp_path / "u.npz", labels=False)}[kind]
    code = main([*COMMANDS[name], "--data", spec, "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot train" in err
