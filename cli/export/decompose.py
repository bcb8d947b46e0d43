"""``pimc export decompose``: train a zoo model, your own ONNX or a factory's model with PENNI kernel
decomposition and export it."""

from __future__ import annotations

import json

import click

from ...passes.decompose.config import PenniConfig
from .common import FILE, THREADS_OPTION, emit, model_options, shared_options
from .options import build, config_options


@click.command("decompose")
@model_options()
@click.option("-o", "--output", type=FILE, required=True,
              help="Output .onnx (two-conv decomposed form, annotated, shrunk).")
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=15, show_default=True,
              help="Dense training before decomposing (none for an ONNX model).")
@config_options(PenniConfig)
@click.option("--seed", type=int, default=PenniConfig.seed, show_default=True)
@THREADS_OPTION
@shared_options
def command(**kw) -> None:
    """Train MODEL with PENNI (decompose, alternate, L1, prune, fine-tune, shrink) and export ONNX."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import onnx
    import torch

    from ...models.train import export_onnx
    from ...passes.decompose._common import stored_conv_params
    from ...passes.decompose.exporter import export_penni, penni_compress
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config = build(PenniConfig, kw)
    resolved = resolve_model(kw)
    model, shape, test = resolved.module, resolved.shape, resolved.sets.test
    pretrain_unless_trained(resolved, kw, kw["pretrain_epochs"], kw["lr"])
    dense_params = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    summary: dict = {"model": kw["model_name"], "input_shape": list(shape), "pretrained": not resolved.trained}
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
        resolved.restore_io(kw["dense_output"])
        summary["dense_output"] = str(kw["dense_output"])
        summary["dense_test_accuracy"] = evaluate(kw["dense_output"], test, repeats=1)["accuracy"]
    stats = penni_compress(model, resolved.sets.loader, config)
    export_penni(model, kw["output"], shape)
    resolved.finish(kw["output"])
    result = evaluate(kw["output"], test, repeats=1)
    stored = stored_conv_params(onnx.load(str(kw["output"])))
    return summary | {
        "output": str(kw["output"]), "test_accuracy": result["accuracy"], "test_samples": result["samples"],
        "decomposed_layers": stats["layers"],
        "decomposed_dense_params": stats["decomposed_dense_params"],
        "decomposed_params": stats["decomposed_params"],
        "kept_coefficient_fraction": {k: round(v, 4) for k, v in stats["kept_fraction"].items()},
        "dead_filters": stats["dead_filters"],
        "residual_streams": stats["residual_streams"],
        **({"residual_note": stats["residual_note"]} if stats["residual_note"] else {}),
        "dense_conv_params": dense_params,
        "stored_conv_params": stored,
        "conv_params_removed": round(1 - stored / max(dense_params, 1), 4),
    }


def _print_summary(s: dict) -> None:
    click.echo(json.dumps(s, indent=1))
    if "dense_output" in s:
        click.echo(f"wrote {s['dense_output']}: dense test accuracy {s['dense_test_accuracy']:.2%}")
    click.echo(f"wrote {s['output']}: test accuracy {s['test_accuracy']:.2%} on {s['test_samples']} samples, "
               f"conv weights stored {s['stored_conv_params']}/{s['dense_conv_params']} "
               f"({s['conv_params_removed']:.2%} removed)")
