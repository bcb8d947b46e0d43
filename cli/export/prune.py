"""``pimc export prune``: prune a zoo model, your own ONNX or a factory's model with ADMM-NN (optionally
progressive, optionally jointly quantized) and export ONNX."""

from __future__ import annotations

import time

import click

from ...compiler.tables import Table, console
from ...passes.prune.config import QUANTIZE_SCALES, SCOPES, PruneConfig, PruneSchedule
from .common import FILE, emit, model_options, shared_options

_FILE = FILE


@click.command("prune")
@model_options()
@click.option("-o", "--output", type=_FILE, required=True, help="Pruned .onnx file.")
@click.option("--ratio", type=float, default=PruneConfig.ratio, show_default=True,
              help="Compression of the pruned layers' non-zero weights (dense / kept).")
@click.option("--scope", type=click.Choice(SCOPES), default=PruneConfig.scope, show_default=True,
              help="erk: per-layer density ∝ Σdims/Πdims; global: one threshold on |w|/rms(layer); "
                   "layer: the same sparsity in every layer.")
@click.option("--conv-weight", type=float, default=PruneConfig.conv_weight, show_default=True,
              help="erk / global: convs get this many times an FC layer's share (convs before FC).")
@click.option("--nm", default=PruneConfig.nm, help="N:M sparsity instead of --ratio, e.g. 2:4.")
@click.option("--include", multiple=True, help="Only prune Conv2d/Linear modules matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Do not prune modules matching this glob (repeatable).")
@click.option("--shrink/--no-shrink", default=PruneConfig.shrink, show_default=True,
              help="Remove the channels pruning left dead (no weights in or out) from the export, exactly.")
@click.option("--steps", type=int, default=PruneSchedule.steps, show_default=True,
              help="Progressive ADMM: raise the ratio geometrically over this many ADMM + retrain rounds.")
@click.option("--admm-epochs", type=int, default=PruneSchedule.admm_epochs, show_default=True,
              help="ADMM epochs per round.")
@click.option("--retrain-epochs", type=int, default=PruneSchedule.retrain_epochs, show_default=True,
              help="Masked retraining epochs per round.")
@click.option("--rho", type=float, default=PruneSchedule.rho, show_default=True, help="Initial ADMM penalty ρ.")
@click.option("--rho-growth", type=float, default=PruneSchedule.rho_growth, show_default=True,
              help="ρ multiplier per Z update.")
@click.option("--prune-lr", type=float, default=PruneSchedule.lr, show_default=True,
              help="Learning rate of ADMM / retraining.")
@click.option("--update-every", type=click.IntRange(min=1), default=None,
              help="Optimizer steps between Z/U updates (default: one epoch).")
@click.option("--quantize-bits", type=int, default=None,
              help="Jointly quantize the surviving weights to N bits (ADMM, levels ±i·q) and export QDQ.")
@click.option("--quantize-epochs", type=int, default=PruneSchedule.quantize_epochs, show_default=True,
              help="ADMM quantization epochs (and as many bias-retraining epochs).")
@click.option("--quantize-scale", type=click.Choice(QUANTIZE_SCALES), default=PruneSchedule.quantize_scale,
              show_default=True, help="With --quantize-bits: one scale q per output channel, or per layer (ADMM-NN).")
@click.option("--act-bits", type=int, default=PruneSchedule.act_bits, show_default=True,
              help="Activation bits of the QDQ export (with --quantize-bits).")
@click.option("--augment-shift", type=float, default=PruneSchedule.augment_shift, show_default=True,
              help="Random shift of every training batch, up to this many pixels (0: none).")
@click.option("--augment-rotate", type=float, default=PruneSchedule.augment_rotate, show_default=True,
              help="Random rotation of every training batch, up to this many degrees.")
@click.option("--augment-scale", type=float, default=PruneSchedule.augment_scale, show_default=True,
              help="Random scaling of every training batch, up to this fraction (0.1 = ±10 %).")
@click.option("--distill", type=float, default=PruneSchedule.distill, show_default=True,
              help="Knowledge distillation weight α in [0, 1] from the dense model during ADMM, masked retraining "
                   "and quantization: (1 − α)·CE + α·T²·KL(dense ‖ pruned); 0: none.")
@click.option("--distill-temperature", type=float, default=PruneSchedule.distill_temperature, show_default=True,
              help="Softmax temperature T of --distill.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads (default: torch's choice; 1 on shared machines).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True,
              help="Dense pre-training epochs (none for an ONNX model).")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training.")
@click.option("--validation", type=int, default=None,
              help="Hold the last N training images out of pre-training and pruning and report the accuracy "
                   "on them (choose --ratio etc. on this, never on the test split).")
@shared_options
def command(**kw) -> None:
    """ADMM-NN non-structured pruning (+ optional joint quantization) of a model, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import torch

    from ...models.train import evaluate_torch, export_onnx
    from ...passes.prune.exporter import admm_prune, export_pruned_onnx, exported_nonzeros, weight_nonzeros
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config = PruneConfig(kw["ratio"], kw["scope"], kw["conv_weight"], kw["nm"] or "", tuple(kw["include"]),
                         tuple(kw["exclude"]), kw["shrink"])
    schedule = PruneSchedule(kw["admm_epochs"], kw["retrain_epochs"], kw["steps"], kw["rho"], kw["rho_growth"],
                             kw["update_every"], kw["prune_lr"], kw["quantize_bits"], kw["quantize_epochs"], kw["act_bits"],
                             kw["quantize_scale"], kw["augment_shift"], kw["augment_rotate"], kw["augment_scale"],
                             distill=kw["distill"], distill_temperature=kw["distill_temperature"])
    config.check()
    schedule.check()
    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    seed, progress = kw["seed"], not kw["no_progress"]
    resolved = resolve_model(kw)
    validation = None
    if kw["validation"] is not None:
        from ...models.train import hold_out

        resolved.sets, validation = hold_out(resolved.sets, kw["validation"], kw["batch_size"], seed)
    sets, shape = resolved.sets, resolved.shape
    started, cpu_started = time.perf_counter(), time.process_time()
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"], schedule.augment())
    pretrained, cpu_pretrained = time.perf_counter(), time.process_time()
    model = resolved.module
    if schedule.quantize_bits and not resolved.trained:  # an ONNX model's BatchNorms are folded on load
        from ...passes.quantize.qat import fold_batchnorm

        model = fold_batchnorm(model)
    dense_nnz, total = weight_nonzeros(model)
    has_labels = sets.test is not None and sets.test.y is not None
    dense_accuracy = evaluate_torch(model, sets.test.x, sets.test.y) if has_labels else None
    validation_dense = evaluate_torch(model, validation.x, validation.y) if validation is not None else None
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    result = admm_prune(model, sets.loader, config, schedule, seed=seed, progress=progress)
    seconds = {"pretrain": round(pretrained - started, 1), "prune": round(time.perf_counter() - pretrained, 1),
               "pretrain_cpu": round(cpu_pretrained - cpu_started, 1),
               "prune_cpu": round(time.process_time() - cpu_pretrained, 1)}
    calibration = [{"input": sets.train.x[i:i + 1]} for i in range(min(256, len(sets.train.x)))]
    proto = export_pruned_onnx(model, result, kw["output"], shape, calibration, schedule.act_bits,
                               schedule.quantize_bits)
    resolved.finish(kw["output"], kw["dense_output"])
    pruned_nnz = exported_nonzeros(proto)  # after shrink, which may drop live weights of an unread filter
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
        "config": {**config.__dict__, "include": list(config.include), "exclude": list(config.exclude)},
        "schedule": schedule.__dict__,
        "distillation": {"alpha": schedule.distill, "temperature": schedule.distill_temperature},
        "weights": total, "nonzero_dense": dense_nnz, "nonzero_pruned": pruned_nnz,
        "compression": round(dense_nnz / max(pruned_nnz, 1), 2), "train_seconds": seconds,
        "accuracy_pruned": evaluate(kw["output"], sets.test, repeats=1)["accuracy"],
        **result.summary(),
    }
    if kw["dense_output"]:
        summary["dense_output"] = str(kw["dense_output"])
        summary["accuracy_dense"] = evaluate(kw["dense_output"], sets.test, repeats=1)["accuracy"]
    if validation is None:
        summary["warnings"] = accuracy_warnings(dense_accuracy, summary["accuracy_pruned"], summary["compression"])
    else:
        summary["validation_samples"] = len(validation)
        summary["training_samples"] = len(sets.train)
        summary["accuracy_validation_pruned"] = evaluate(kw["output"], validation, repeats=1)["accuracy"]
        if kw["dense_output"]:
            summary["accuracy_validation_dense"] = evaluate(kw["dense_output"], validation, repeats=1)["accuracy"]
        # selection mode: the warning judges the held-out images, so a choice made by it never reads the test split
        summary["warnings"] = accuracy_warnings(summary.get("accuracy_validation_dense", validation_dense),
                                                summary["accuracy_validation_pruned"],
                                                summary["compression"], f"the {len(validation)} validation images")
    return summary


LOSS_WARNING_POINTS = 1.0  # ADMM-NN's claim is "no accuracy loss"; pimc's default budget is 1 point


def accuracy_warnings(dense: float | None, pruned: float | None, compression: float,
                      split: str = "the test split") -> list[str]:
    """A warning when pruning lost more than LOSS_WARNING_POINTS on ``split`` (the default ratio is
    ADMM-NN's LeNet-5 figure, too strong for many smaller models)."""
    if dense is None or pruned is None or 100 * (dense - pruned) <= LOSS_WARNING_POINTS:
        return []
    return [f"pruning to {compression:g}x fewer non-zeros lost {100 * (dense - pruned):.2f} points on {split} "
            f"({dense:.2%} -> {pruned:.2%}): try a lower --ratio, chosen on held-out training images with "
            "--validation N"]


def _print_summary(s: dict) -> None:
    table = Table(title=f"ADMM-pruned {s['model']} → {s['output']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "accuracy_validation_dense" in s:
        table.add_row("dense validation accuracy", f"{s['accuracy_validation_dense']:.2%}")
    if "accuracy_validation_pruned" in s:
        table.add_row(f"pruned validation accuracy ({s['validation_samples']} training images held out)",
                      f"{s['accuracy_validation_pruned']:.2%}")
    if "accuracy_dense" in s:
        table.add_row("dense test accuracy (onnxruntime)", f"{s['accuracy_dense']:.2%}")
    table.add_row("pruned test accuracy (onnxruntime)", f"{s['accuracy_pruned']:.2%}")
    table.add_row("weights non-zero dense → pruned", f"{s['nonzero_dense']} → {s['nonzero_pruned']}")
    table.add_row("compression (non-zeros)", f"{s['compression']}×")
    for name, layer in s["layers"].items():
        table.add_row(f"  {name}", f"{layer['nonzero']}/{layer['params']} non-zero")
    for item in s["skipped"]:
        table.add_row(f"  skipped {item['node']}", item["reason"])
    console().print(table)
