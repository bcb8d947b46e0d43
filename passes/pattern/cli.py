"""``pimc export pattern``: train a zoo model, pattern-prune it with ADMM (or one-shot) and export ONNX."""

from __future__ import annotations

import click

from ...compiler.errors import PimcError
from ...compiler.tables import Table, console
from ...runtime.datasets import TRAINABLE_HELP
from .._exporter_cli import FILE, emit, shared_options
from .pattern_prune import LIBRARIES, PatternConfig
from .schedule import AdmmSchedule

_FILE = FILE


@click.command("pattern")
@click.option("--model", "model_name", required=True, help="Zoo model name (pimc models list).")
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
@click.option("-o", "--output", type=_FILE, required=True, help="Pattern-pruned .onnx file.")
@click.option("--mode", type=click.Choice(["admm", "oneshot"]), default="admm", show_default=True)
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
              help="Dense pre-training epochs (as `pimc models train`).")
@click.option("--admm-epochs", type=int, default=AdmmSchedule.admm_epochs, show_default=True, help="ADMM epochs (admm mode).")
@click.option("--retrain-epochs", type=int, default=AdmmSchedule.retrain_epochs, show_default=True,
              help="Masked retraining / fine-tuning epochs.")
@click.option("--rho", type=float, default=AdmmSchedule.rho, show_default=True, help="Initial ADMM penalty ρ.")
@click.option("--rho-growth", type=float, default=AdmmSchedule.rho_growth, show_default=True, help="ρ multiplier per Z update.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training.")
@click.option("--prune-lr", type=float, default=AdmmSchedule.lr, show_default=True, help="Learning rate of ADMM/retraining.")
@shared_options
def command(**kw) -> None:
    """Pattern + connectivity pruning (PatDNN / ADMM-NN) of zoo model on a dataset, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import torch

    from ...models.train import export_onnx, train_classifier, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...runtime.session import evaluate
    from .admm import admm_prune, conv_weight_nonzeros, export_pattern_onnx, oneshot_prune

    get_spec(kw["model_name"])
    config = _config(kw)
    shape = _input_shape(model_input_shape(kw["model_name"], kw["in_channels"]), kw["input_size"])
    seed = kw["seed"]
    sets = training_data(kw["data"], shape, kw["batch_size"], seed, limit=kw["train_limit"])
    test, loader = sets.test, sets.loader
    progress = not kw["no_progress"]
    torch.manual_seed(seed)
    model = build_model(kw["model_name"], max(10, sets.num_classes), kw["in_channels"])
    _pretrain(model, loader, kw, progress, train_classifier, torch)
    dense_nnz, conv_params = conv_weight_nonzeros(model)
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    if kw["mode"] == "admm":
        schedule = AdmmSchedule(kw["admm_epochs"], kw["retrain_epochs"], kw["rho"], kw["rho_growth"], None, kw["prune_lr"])
        result = admm_prune(model, loader, config, schedule, seed=seed, progress=progress)
    else:
        result = oneshot_prune(model, loader, config, kw["retrain_epochs"], kw["prune_lr"], seed=seed, progress=progress)
    _, stats = export_pattern_onnx(model, result, kw["output"], shape)
    pruned_nnz, _ = conv_weight_nonzeros(model)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "mode": kw["mode"], "output": str(kw["output"]),
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


def _pretrain(model, loader, kw: dict, progress: bool, train_classifier, torch, augment=None) -> None:
    """Dense pre-training exactly as ``pimc models train`` (or load a checkpoint); ``augment``: the
    ``models.augment.Augment`` of the training batches (default none)."""
    path = kw["dense_checkpoint"]
    if path is not None and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
        except (RuntimeError, OSError) as exc:
            raise PimcError(f"{path}: not a checkpoint of this model ({str(exc).splitlines()[0]})") from None
        return
    train_classifier(model, loader, kw["epochs"], lr=kw["lr"], seed=kw["seed"], progress=progress,
                     desc=f"train {kw['model_name']}", augment=augment)
    if path is not None:
        torch.save(model.state_dict(), path)


def _config(kw: dict) -> PatternConfig:
    if kw["patterns"] < 1:
        raise PimcError(f"--patterns must be positive, got {kw['patterns']}")
    if kw["nonzeros"] < 0:
        raise PimcError(f"--nonzeros must not be negative, got {kw['nonzeros']}")
    if not 0.0 <= kw["connectivity"] < 1.0:
        raise PimcError(f"--connectivity must be in [0, 1), got {kw['connectivity']}")
    return PatternConfig(kw["patterns"], kw["nonzeros"], kw["connectivity"], kw["library"],
                         tuple(kw["include"]), tuple(kw["exclude"]))


def _input_shape(shape: tuple[int, int, int], size: int | None) -> tuple[int, int, int]:
    if size is None:
        return shape
    if size < 4:
        raise PimcError(f"--input-size must be at least 4, got {size}")
    return (shape[0], size, size)


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
