"""``pimc export quantize``: train a zoo model, your own ONNX or a factory's model with STE
quantization-aware training or ADMM quantization and export ONNX with QDQ nodes and the ``quantize``
pass's annotations (see :mod:`.qat`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import click

from ...passes.quantize.config import QAT_MODES, QatConfig
from .common import FILE, model_options


@dataclass
class ExportConfig:
    """The CLI's settings: the model and data, float pre-training, and ``QatConfig``'s fields (whose
    defaults are ``QatConfig``'s)."""

    model: str
    output: Path
    data: str = "digits"
    input_shape: str | None = None
    bits: int = QatConfig.bits
    act_bits: int | None = QatConfig.act_bits
    mode: str = QatConfig.mode
    epochs: int = 30
    quant_epochs: int = QatConfig.quant_epochs
    lr: float = 3e-3
    quant_lr: float = QatConfig.quant_lr
    batch_size: int = 64
    rho: float = QatConfig.rho
    rho_growth: float = QatConfig.rho_growth
    retrain_epochs: int = QatConfig.retrain_epochs
    seed: int = QatConfig.seed
    calibration_samples: int = QatConfig.calibration_samples
    progress: bool = QatConfig.progress
    train_limit: int | None = None

    def qat(self) -> QatConfig:
        return QatConfig(**{f.name: getattr(self, f.name) for f in fields(QatConfig)})


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Train float (unless an ONNX model), quantize (qat or admm), export; returns accuracies along the way."""
    from ...models.train import evaluate_torch, train_classifier
    from ...passes.quantize import qat
    from ...runtime.session import evaluate
    from .common import resolve_model

    qcfg = cfg.qat()
    qcfg.check()
    resolved = resolve_model({"model_name": cfg.model, "input_shape": cfg.input_shape, "data": cfg.data,
                              "batch_size": cfg.batch_size, "seed": cfg.seed, "train_limit": cfg.train_limit})
    net, shape, sets = resolved.module, resolved.shape, resolved.sets
    train, test, loader = sets.train, sets.test, sets.loader
    if not resolved.trained:
        train_classifier(net, loader, cfg.epochs, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress, desc="float")
    resolved.record_reference()
    result: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "pretrained": not resolved.trained,
                              "float_accuracy_torch": evaluate_torch(net, test.x, test.y)}
    net = qat.fold_batchnorm(net)
    calib = [{"input": train.x[i : i + 1]} for i in range(min(cfg.calibration_samples, len(train.x)))]
    result["ptq_accuracy"] = _ptq_accuracy(net, shape, qcfg.bits, qcfg.activation_bits, calib, test)
    net, state, info = qat.quantize_trained(net, loader, qcfg)
    result.update(info)
    result["quantized_accuracy_torch"] = evaluate_torch(net, test.x, test.y)
    qat.write_quantized_onnx(net, state, cfg.output, shape, calib)
    resolved.finish(cfg.output)
    result["onnx_accuracy"] = evaluate(cfg.output, test, repeats=1)["accuracy"]
    return result


def _ptq_accuracy(net, shape, bits: int, act_bits: int, calib, test) -> float:
    """Post-training ``quantize`` of the same float (BN-folded) model, for comparison."""
    import tempfile

    from ...compiler.loader import load_model
    from ...compiler.passbase import PassContext
    from ...compiler.pipeline import PassManager
    from ...models.train import export_onnx
    from ...passes.quantize.quantize import Quantize
    from ...runtime.session import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, Path(tmp) / "float.onnx", shape)
        manager = PassManager([Quantize(weight_bits=bits, act_bits=act_bits)], PassContext(calibration=calib))
        model = manager.run(load_model(path))
    return evaluate(model, test, repeats=1)["accuracy"]


@click.command("quantize")
@model_options()
@click.option("--bits", type=int, default=ExportConfig.bits, show_default=True, help="Weight bit width (2-8).")
@click.option("--act-bits", type=int, default=None, help="Activation bit width (default: --bits).")
@click.option("--mode", type=click.Choice(QAT_MODES), default=ExportConfig.mode, show_default=True,
              help="STE quantization-aware training or ADMM quantization.")
@click.option("--epochs", type=int, default=ExportConfig.epochs, show_default=True, help="Float training epochs (none for an ONNX model).")
@click.option("--quant-epochs", type=int, default=ExportConfig.quant_epochs, show_default=True, help="QAT / ADMM epochs.")
@click.option("--lr", type=float, default=ExportConfig.lr, show_default=True, help="Float training learning rate.")
@click.option("--quant-lr", type=float, default=ExportConfig.quant_lr, show_default=True, help="QAT / ADMM learning rate.")
@click.option("--rho", type=float, default=ExportConfig.rho, show_default=True, help="ADMM penalty ρ (initial).")
@click.option("--rho-growth", type=float, default=ExportConfig.rho_growth, show_default=True, help="ρ multiplier per ADMM update.")
@click.option("--retrain-epochs", type=int, default=ExportConfig.retrain_epochs, show_default=True,
              help="ADMM: epochs retraining biases after the final projection.")
@click.option("--batch-size", type=int, default=ExportConfig.batch_size, show_default=True)
@click.option("--calibration-samples", type=int, default=ExportConfig.calibration_samples, show_default=True,
              help="Training images that calibrate the activation ranges.")
@click.option("--seed", type=int, default=ExportConfig.seed, show_default=True)
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (smoke runs).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--output", type=FILE, required=True)
def command(model_name: str, output: Path, as_json: bool, no_progress: bool, **kwargs: Any) -> None:
    """Train MODEL with quantization-aware training (or ADMM) and export QDQ ONNX."""
    cfg = ExportConfig(model=model_name, output=output, progress=not no_progress, **kwargs)
    result = run_export(cfg)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"float (torch)      {result['float_accuracy_torch']:.4f}")
    click.echo(f"post-training      {result['ptq_accuracy']:.4f}  (quantize pass on the same float model)")
    click.echo(f"{cfg.mode + ' (torch)':18s} {result['quantized_accuracy_torch']:.4f}")
    click.echo(f"exported (onnxrt)  {result['onnx_accuracy']:.4f}  (held-out test split)")
    click.echo(f"wrote {output}")
