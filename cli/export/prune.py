"""``pimc export prune``: prune a zoo model, your own ONNX or a factory's model with ADMM-NN (optionally
progressive, optionally jointly quantized) and export ONNX."""

from __future__ import annotations

import time

import click

from ...compiler.tables import console, metric_table
from ...passes.prune.config import PruneConfig, PruneSchedule
from .common import FILE, THREADS_OPTION, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


@click.command("prune")
@model_options()
@click.option("-o", "--output", type=FILE, required=True, help="Pruned .onnx file.")
@config_options(PruneConfig, PruneSchedule)
@THREADS_OPTION
@pretraining_options()
@click.option("--validation", type=int, default=None,
              help="Hold the last N training images out of pre-training and pruning and report the accuracy "
                   "on them (choose --ratio etc. on this, never on the test split).")
@shared_options
def command(**kw) -> None:
    """ADMM-NN non-structured pruning (+ optional joint quantization) of a model, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    from ...models.train import evaluate_torch, export_onnx
    from ...passes.prune.exporter import admm_prune, export_pruned_onnx, exported_nonzeros, weight_nonzeros
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config, schedule = build(PruneConfig, kw), build(PruneSchedule, kw)
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
    table = metric_table(f"ADMM-pruned {s['model']} → {s['output']}")
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
