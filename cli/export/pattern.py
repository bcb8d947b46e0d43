"""``pimc export pattern``: pattern-prune a zoo model, your own ONNX or a factory's model with ADMM (or
one-shot) and export ONNX."""

from __future__ import annotations

import click

from ...compiler.tables import console, metric_table
from ...passes.pattern.config import AdmmSchedule, PatternConfig
from .common import FILE, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


@click.command("pattern")
@model_options()
@click.option("-o", "--output", type=FILE, required=True, help="Pattern-pruned .onnx file.")
@config_options(PatternConfig, AdmmSchedule)
@pretraining_options()
@shared_options
def command(**kw) -> None:
    """Pattern + connectivity pruning (PatDNN / ADMM-NN) of a model on a dataset, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    from ...models.train import export_onnx
    from ...passes.pattern.admm import conv_weight_nonzeros, export_pattern_onnx, pattern_prune_model
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config, schedule = build(PatternConfig, kw), build(AdmmSchedule, kw)
    resolved = resolve_model(kw)
    model, shape, test, loader = resolved.module, resolved.shape, resolved.sets.test, resolved.sets.loader
    seed, progress = kw["seed"], not kw["no_progress"]
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"])
    dense_nnz, conv_params = conv_weight_nonzeros(model)
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    result = pattern_prune_model(model, loader, config, schedule, seed, progress)
    _, stats = export_pattern_onnx(model, result, kw["output"], shape)
    resolved.finish(kw["output"], kw["dense_output"])
    pruned_nnz, _ = conv_weight_nonzeros(model)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "mode": schedule.mode, "output": str(kw["output"]),
        "pretrained": not resolved.trained,
        "config": config.__dict__ | {"include": list(config.include), "exclude": list(config.exclude)},
        "conv_params": conv_params, "conv_nonzero_dense": dense_nnz, "conv_nonzero_pruned": pruned_nnz,
        "conv_compression": round(dense_nnz / max(pruned_nnz, 1), 2),
        "accuracy_pruned": evaluate(kw["output"], test, repeats=1)["accuracy"],
        "skipped": result.skipped, "layers": stats["layers"], "rho_trace": result.trace,
    }
    if kw["dense_output"]:
        summary["dense_output"] = str(kw["dense_output"])
        summary["accuracy_dense"] = evaluate(kw["dense_output"], test, repeats=1)["accuracy"]
    return summary


def _print_summary(s: dict) -> None:
    table = metric_table(f"pattern-pruned {s['model']} ({s['mode']}) → {s['output']}")
    if "accuracy_dense" in s:
        table.add_row("dense test accuracy (onnxruntime)", f"{s['accuracy_dense']:.2%}")
    table.add_row("pruned test accuracy (onnxruntime)", f"{s['accuracy_pruned']:.2%}")
    table.add_row("conv weights non-zero dense → pruned", f"{s['conv_nonzero_dense']} → {s['conv_nonzero_pruned']}")
    table.add_row("conv compression (non-zeros)", f"{s['conv_compression']}×")
    for name, layer in s["layers"].items():
        table.add_row(f"  {name}", f"{layer['nonzero_after']} non-zero, "
                      f"{layer['kernels_removed']}/{layer['kernels']} kernels removed, "
                      f"{layer['patterns_used']} patterns")
    for item in s["skipped"]:
        table.add_row(f"  skipped {item['node']}", item["reason"])
    console().print(table)
