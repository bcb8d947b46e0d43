"""``pimc export quantize``: train a zoo model, your own ONNX or a factory's model with STE
quantization-aware training or ADMM quantization and export ONNX with QDQ nodes and the ``quantize``
pass's annotations (see :mod:`.qat`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ...passes.quantize.config import QatConfig
from .common import FILE, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


def run_export(**kw: Any) -> dict[str, Any]:
    """Train float (unless an ONNX model), quantize (qat or admm), export; returns accuracies along the way."""
    from ...models.train import evaluate_torch, export_onnx
    from ...passes.quantize import qat
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    qcfg = build(QatConfig, kw)
    resolved = resolve_model(kw)
    net, shape, sets = resolved.module, resolved.shape, resolved.sets
    train, test, loader = sets.train, sets.test, sets.loader
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"])
    result: dict[str, Any] = {"config": {k: str(v) for k, v in kw.items()}, "pretrained": not resolved.trained,
                              "float_accuracy_torch": evaluate_torch(net, test.x, test.y)}
    if kw["dense_output"]:
        export_onnx(net, kw["dense_output"], shape)
        result["dense_output"] = str(kw["dense_output"])
    net = qat.fold_batchnorm(net)
    calib = [{"input": train.x[i : i + 1]} for i in range(min(qcfg.calibration_samples, len(train.x)))]
    result["ptq_accuracy"] = _ptq_accuracy(net, shape, qcfg.bits, qcfg.activation_bits, calib, test)
    net, state, info = qat.quantize_trained(net, loader, qcfg)
    result.update(info)
    result["quantized_accuracy_torch"] = evaluate_torch(net, test.x, test.y)
    qat.write_quantized_onnx(net, state, kw["output"], shape, calib)
    resolved.finish(kw["output"], kw["dense_output"])
    result["onnx_accuracy"] = evaluate(kw["output"], test, repeats=1)["accuracy"]
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
@click.option("-o", "--output", type=FILE, required=True)
@config_options(QatConfig)
@pretraining_options()
@shared_options
def command(**kw: Any) -> None:
    """Train MODEL with quantization-aware training (or ADMM) and export QDQ ONNX."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def _print_summary(result: dict[str, Any]) -> None:
    click.echo(f"float (torch)      {result['float_accuracy_torch']:.4f}")
    click.echo(f"post-training      {result['ptq_accuracy']:.4f}  (quantize pass on the same float model)")
    click.echo(f"{result['config']['mode'] + ' (torch)':18s} {result['quantized_accuracy_torch']:.4f}")
    click.echo(f"exported (onnxrt)  {result['onnx_accuracy']:.4f}  (held-out test split)")
    click.echo(f"wrote {result['config']['output']}")
