"""``pimc export pattern``: pattern-prune a zoo model, your own ONNX or a factory's model with ADMM (or
one-shot) and export ONNX."""

from __future__ import annotations

import click

from ...compiler.tables import Table, console
from ...passes.pattern.config import MODES, AdmmSchedule, PatternConfig
from ...passes.pattern.pattern_prune import LIBRARIES
from .common import FILE, emit, input_size, model_options, shared_options

_FILE = FILE


@click.command("pattern")
@model_options()
@click.option("-o", "--output", type=_FILE, required=True, help="Pattern-pruned .onnx file.")
@click.option("--mode", type=click.Choice(MODES), default=MODES[0], show_default=True)
@click.option("--patterns", type=int, default=PatternConfig.patterns, show_default=True, help="Library size per layer.")
@click.option("--nonzeros", type=int, default=PatternConfig.nonzeros, show_default=True,
              help="Weights kept per kernel (0: 4 for 3x3, round(4k²/9) otherwise, 11 for 5x5).")
@click.option("--connectivity", type=float, default=PatternConfig.connectivity, show_default=True,
              help="Fraction of kernels removed per layer.")
@click.option("--library", type=click.Choice(LIBRARIES), default=PatternConfig.library, show_default=True)
@click.option("--include", multiple=True, help="Only prune conv modules matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Do not prune conv modules matching this glob (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True,
              help="Dense pre-training epochs (as `pimc models train`; none for an ONNX model).")
@click.option("--admm-epochs", type=int, default=AdmmSchedule.admm_epochs, show_default=True, help="ADMM epochs (admm mode).")
@click.option("--retrain-epochs", type=int, default=AdmmSchedule.retrain_epochs, show_default=True,
              help="Masked retraining / fine-tuning epochs.")
@click.option("--rho", type=float, default=AdmmSchedule.rho, show_default=True, help="Initial ADMM penalty ρ.")
@click.option("--rho-growth", type=float, default=AdmmSchedule.rho_growth, show_default=True, help="ρ multiplier per Z update.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training.")
@click.option("--prune-lr", type=float, default=AdmmSchedule.lr, show_default=True, help="Learning rate of ADMM/retraining.")
@click.option("--update-every", type=click.IntRange(min=1), default=None,
              help="Optimizer steps between Z/U updates (default: one epoch).")
@shared_options
def command(**kw) -> None:
    """Pattern + connectivity pruning (PatDNN / ADMM-NN) of a model on a dataset, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    from ...models.train import export_onnx
    from ...passes.pattern.admm import admm_prune, conv_weight_nonzeros, export_pattern_onnx, oneshot_prune
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config = _config(kw)
    schedule = AdmmSchedule(kw["admm_epochs"], kw["retrain_epochs"], kw["rho"], kw["rho_growth"], kw["update_every"],
                            kw["prune_lr"])
    schedule.check()
    resolved = resolve_model(kw)
    model, shape, test, loader = resolved.module, resolved.shape, resolved.sets.test, resolved.sets.loader
    seed, progress = kw["seed"], not kw["no_progress"]
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"])
    dense_nnz, conv_params = conv_weight_nonzeros(model)
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    if kw["mode"] == "admm":
        result = admm_prune(model, loader, config, schedule, seed=seed, progress=progress)
    else:
        result = oneshot_prune(model, loader, config, kw["retrain_epochs"], kw["prune_lr"], seed=seed, progress=progress)
    _, stats = export_pattern_onnx(model, result, kw["output"], shape)
    resolved.finish(kw["output"], kw["dense_output"])
    pruned_nnz, _ = conv_weight_nonzeros(model)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "mode": kw["mode"], "output": str(kw["output"]),
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


def _config(kw: dict) -> PatternConfig:
    config = PatternConfig(kw["patterns"], kw["nonzeros"], kw["connectivity"], kw["library"],
                           tuple(kw["include"]), tuple(kw["exclude"]))
    config.check()
    return config


def _input_shape(shape: tuple[int, int, int], size: int | None) -> tuple[int, int, int]:
    return input_size(shape, size)


def _print_summary(s: dict) -> None:
    table = Table(title=f"pattern-pruned {s['model']} ({s['mode']}) → {s['output']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
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
