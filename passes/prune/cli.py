"""``pimc export prune``: train a zoo model, prune it with ADMM-NN (optionally progressive, optionally jointly
quantized) and export ONNX."""

from __future__ import annotations

import time

import click

from ...compiler.errors import PimcError
from ...compiler.tables import Table, console
from ...runtime.datasets import TRAINABLE_HELP
from .._exporter_cli import FILE, emit, shared_options
from .config import QUANTIZE_SCALES, SCOPES, PruneConfig, PruneSchedule

_FILE = FILE


@click.command("prune")
@click.option("--model", "model_name", required=True,
              help="Zoo model name (pimc models list), your own FILE.onnx, or FILE.py:FACTORY.")
@click.option("--input-shape", default=None, help="C,H,W of a FILE.py:FACTORY model (else its input_shape).")
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
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
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads (default: torch's choice; 1 on shared machines).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True, help="Dense pre-training epochs.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training.")
@shared_options
def command(**kw) -> None:
    """ADMM-NN non-structured pruning (+ optional joint quantization) of a zoo model, exported with annotations."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import torch

    from ...models.train import export_onnx, train_classifier, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...runtime.session import evaluate
    from ..pattern.cli import _pretrain
    from .exporter import admm_prune, export_pruned_onnx, weight_nonzeros

    config = PruneConfig(kw["ratio"], kw["scope"], kw["conv_weight"], kw["nm"] or "", tuple(kw["include"]),
                         tuple(kw["exclude"]))
    schedule = PruneSchedule(kw["admm_epochs"], kw["retrain_epochs"], kw["steps"], kw["rho"], kw["rho_growth"],
                             None, kw["prune_lr"], kw["quantize_bits"], kw["quantize_epochs"], kw["act_bits"],
                             kw["quantize_scale"], kw["augment_shift"], kw["augment_rotate"], kw["augment_scale"])
    config.check()
    schedule.check()
    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    seed = kw["seed"]
    progress = not kw["no_progress"]
    model, shape, source = _user_model(kw, build_model, get_spec, model_input_shape)
    sets = training_data(kw["data"], shape, kw["batch_size"], seed, limit=kw["train_limit"])
    if model is None:
        torch.manual_seed(seed)
        model = build_model(kw["model_name"], max(10, sets.num_classes), kw["in_channels"])
    started, cpu_started = time.perf_counter(), time.process_time()
    if source is None:
        _pretrain(model, sets.loader, kw, progress, train_classifier, torch, schedule.augment())
    pretrained, cpu_pretrained = time.perf_counter(), time.process_time()
    if schedule.quantize_bits and source is None:  # an ONNX model's BatchNorms are folded on load
        from ..quantize.qat import fold_batchnorm

        model = fold_batchnorm(model)
    dense_nnz, total = weight_nonzeros(model)
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    result = admm_prune(model, sets.loader, config, schedule, seed=seed, progress=progress)
    seconds = {"pretrain": round(pretrained - started, 1), "prune": round(time.perf_counter() - pretrained, 1),
               "pretrain_cpu": round(cpu_pretrained - cpu_started, 1),
               "prune_cpu": round(time.process_time() - cpu_pretrained, 1)}
    calibration = [{"input": sets.train.x[i:i + 1]} for i in range(min(256, len(sets.train.x)))]
    export_pruned_onnx(model, result, kw["output"], shape, calibration, schedule.act_bits, schedule.quantize_bits)
    if source is not None:
        from ...models.from_onnx import rename_io

        for path in (kw["output"], kw["dense_output"]):
            if path:
                rename_io(path, source)
    pruned_nnz, _ = weight_nonzeros(model)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
        "config": {**config.__dict__, "include": list(config.include), "exclude": list(config.exclude)},
        "schedule": schedule.__dict__,
        "weights": total, "nonzero_dense": dense_nnz, "nonzero_pruned": pruned_nnz,
        "compression": round(dense_nnz / max(pruned_nnz, 1), 2), "train_seconds": seconds,
        "accuracy_pruned": evaluate(kw["output"], sets.test, repeats=1)["accuracy"],
        **result.summary(),
    }
    if kw["dense_output"]:
        summary["dense_output"] = str(kw["dense_output"])
        summary["accuracy_dense"] = evaluate(kw["dense_output"], sets.test, repeats=1)["accuracy"]
    return summary


def _user_model(kw: dict, build_model, get_spec, model_input_shape):
    """(module or None for a zoo model, input shape, source ONNX or None). An ONNX model keeps its trained
    weights (no pre-training); a factory's model is pre-trained like a zoo model."""
    from ..pattern.cli import _input_shape

    name = kw["model_name"]
    if name.endswith(".onnx"):
        from ...models.from_onnx import load_onnx_module

        module, shape, source = load_onnx_module(name)
        return module, shape, source
    if ".py:" in name:
        from ...models.from_onnx import load_factory

        module = load_factory(name, 10)
        text = kw["input_shape"] or ",".join(str(d) for d in getattr(module, "input_shape", ()))
        try:
            shape = tuple(int(d) for d in text.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise PimcError(f"--model {name}: give --input-shape C,H,W (or an input_shape attribute)")
        return module, shape, None
    get_spec(name)
    return None, _input_shape(model_input_shape(name, kw["in_channels"]), kw["input_size"]), None


def _print_summary(s: dict) -> None:
    table = Table(title=f"ADMM-pruned {s['model']} → {s['output']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
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
