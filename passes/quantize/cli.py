"""``pimc export quantize``: train a zoo model with STE quantization-aware training or ADMM quantization
and export ONNX with QDQ nodes and the ``quantize`` pass's annotations (see :mod:`.qat`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from ...compiler.errors import PimcError
from ...runtime.datasets import TRAINABLE_HELP


@dataclass
class ExportConfig:
    model: str
    output: Path
    data: str = "digits"
    bits: int = 8
    act_bits: int | None = None
    mode: str = "qat"
    epochs: int = 30
    quant_epochs: int = 10
    lr: float = 3e-3
    quant_lr: float = 1e-3
    batch_size: int = 64
    rho: float = 1e-2
    rho_growth: float = 1.3
    retrain_epochs: int = 2
    seed: int = 0
    calibration_samples: int = 256
    progress: bool = True


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Train float, quantize (qat or admm), export; returns accuracies along the way."""
    import torch

    from ...models.train import evaluate_torch, train_classifier, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...runtime.session import evaluate
    from . import qat

    if not 2 <= cfg.bits <= 8 or not 2 <= (cfg.act_bits or cfg.bits) <= 8:
        raise PimcError("--bits and --act-bits must lie between 2 and 8")
    if cfg.calibration_samples < 1:
        raise PimcError(f"--calibration-samples must be positive, got {cfg.calibration_samples}")
    get_spec(cfg.model)
    shape = model_input_shape(cfg.model)
    sets = training_data(cfg.data, shape, cfg.batch_size, cfg.seed)
    train, test, loader = sets.train, sets.test, sets.loader
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model, max(10, sets.num_classes))
    train_classifier(net, loader, cfg.epochs, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress, desc="float")
    result: dict[str, Any] = {"config": {k: str(v) for k, v in asdict(cfg).items()},
                              "float_accuracy_torch": evaluate_torch(net, test.x, test.y)}
    net = qat.fold_batchnorm(net)
    act_bits = cfg.act_bits or cfg.bits
    calib = [{"input": train.x[i : i + 1]} for i in range(min(cfg.calibration_samples, len(train.x)))]
    result["ptq_accuracy"] = _ptq_accuracy(net, shape, cfg.bits, act_bits, calib, test)
    state = _quantize(net, cfg, act_bits, loader, result)
    result["quantized_accuracy_torch"] = evaluate_torch(net, test.x, test.y)
    proto = qat.write_quantized_onnx(net, state, cfg.output, shape, calib)
    result["onnx_accuracy"] = evaluate(proto, test, repeats=1)["accuracy"]
    return result


def _ptq_accuracy(net, shape, bits: int, act_bits: int, calib, test) -> float:
    """Post-training ``quantize`` of the same float (BN-folded) model, for comparison."""
    import tempfile

    from ...compiler.loader import load_model
    from ...compiler.passbase import PassContext
    from ...compiler.pipeline import PassManager
    from ...models.train import export_onnx
    from ...runtime.session import evaluate
    from .quantize import Quantize

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, Path(tmp) / "float.onnx", shape)
        manager = PassManager([Quantize(weight_bits=bits, act_bits=act_bits)], PassContext(calibration=calib))
        model = manager.run(load_model(path))
    return evaluate(model, test, repeats=1)["accuracy"]


def _quantize(net, cfg: ExportConfig, act_bits: int, loader, result: dict[str, Any]):
    from ...models.train import train_classifier
    from . import qat

    if cfg.mode == "qat":
        state = qat.attach_qat(net, cfg.bits, act_bits)
        train_classifier(net, loader, cfg.quant_epochs, lr=cfg.quant_lr, seed=cfg.seed, progress=cfg.progress,
                         weight_decay=0.0, desc="qat")
        qat.detach_qat(net, state)
        return state
    state = qat.QuantState(cfg.bits, act_bits)
    admm = qat.ADMMQuantizer(net, cfg.bits, cfg.rho, cfg.rho_growth, interval=len(loader))
    train_classifier(net, loader, cfg.quant_epochs, lr=cfg.quant_lr, seed=cfg.seed, progress=cfg.progress,
                     weight_decay=0.0, extra_loss=admm.penalty, after_step=admm.after_step, desc="admm")
    result["admm_residual"] = admm.residual()
    admm.finish(state)
    if cfg.retrain_epochs and any(p.requires_grad for p in net.parameters()):
        train_classifier(net, loader, cfg.retrain_epochs, lr=cfg.quant_lr, seed=cfg.seed, progress=cfg.progress,
                         weight_decay=0.0, desc="retrain")
    return state


@click.command("quantize")
@click.option("--model", "model_name", required=True, help="Zoo model name (pimc models list).")
@click.option("--data", default=ExportConfig.data, show_default=True,
              help=f"Training data: {TRAINABLE_HELP}.")
@click.option("--bits", type=int, default=ExportConfig.bits, show_default=True, help="Weight bit width (2-8).")
@click.option("--act-bits", type=int, default=None, help="Activation bit width (default: --bits).")
@click.option("--mode", type=click.Choice(["qat", "admm"]), default=ExportConfig.mode, show_default=True,
              help="STE quantization-aware training or ADMM quantization.")
@click.option("--epochs", type=int, default=ExportConfig.epochs, show_default=True, help="Float training epochs.")
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def command(model_name: str, output: Path, as_json: bool, **kwargs: Any) -> None:
    """Train zoo model MODEL with quantization-aware training (or ADMM) and export QDQ ONNX."""
    cfg = ExportConfig(model=model_name, output=output, **kwargs)
    result = run_export(cfg)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"float (torch)      {result['float_accuracy_torch']:.4f}")
    click.echo(f"post-training      {result['ptq_accuracy']:.4f}  (quantize pass on the same float model)")
    click.echo(f"{cfg.mode + ' (torch)':18s} {result['quantized_accuracy_torch']:.4f}")
    click.echo(f"exported (onnxrt)  {result['onnx_accuracy']:.4f}")
    click.echo(f"wrote {output}")
