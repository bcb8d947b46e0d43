"""``pimc export decompose``: train a zoo model, your own ONNX or a factory's model with PENNI kernel
decomposition and export it."""

from __future__ import annotations

import json

import click

from ...compiler.errors import PimcError
from ...passes.decompose.config import PenniConfig
from .common import FILE, emit, model_options, shared_options


@click.command("decompose")
@model_options()
@click.option("-o", "--output", type=FILE, required=True,
              help="Output .onnx (two-conv decomposed form, annotated, shrunk).")
@click.option("--rank", type=int, default=PenniConfig.rank, show_default=True, help="Basis kernels per layer (d).")
@click.option("--pretrain-epochs", type=int, default=15, show_default=True,
              help="Dense training before decomposing (none for an ONNX model).")
@click.option("--epochs", type=int, default=PenniConfig.epochs, show_default=True, help="Alternating basis/coefficient epochs.")
@click.option("--swap-every", type=int, default=PenniConfig.swap_every, show_default=True, help="Epochs before basis/coefficient swap.")
@click.option("--finetune-epochs", type=int, default=PenniConfig.finetune_epochs, show_default=True, help="Masked fine-tuning epochs.")
@click.option("--l1", type=float, default=PenniConfig.l1, show_default=True, help="L1 weight on the coefficients.")
@click.option("--group-l1", type=float, default=PenniConfig.group_l1, show_default=True,
              help="Group-lasso weight on per-filter and per-input-channel coefficient slices.")
@click.option("--threshold", type=float, default=PenniConfig.threshold, show_default=True,
              help="Prune |c| < threshold x std(C) per layer.")
@click.option("--group-threshold", type=float, default=PenniConfig.group_threshold, show_default=True,
              help="Prune whole slices whose RMS < group-threshold x std(C) (0 = off).")
@click.option("--residual-l1", type=float, default=PenniConfig.residual_l1, show_default=True,
              help="Group-lasso weight on residual-stream channels (all writers' and readers' slices together).")
@click.option("--residual-threshold", type=float, default=PenniConfig.residual_threshold, show_default=True,
              help="Kill residual channels whose group norm < this x the stream's mean (0 = off).")
@click.option("--prune-rounds", type=int, default=PenniConfig.prune_rounds, show_default=True,
              help="Prune after each of this many equal parts of the alternating epochs.")
@click.option("--lr", type=float, default=PenniConfig.lr, show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--weight-decay", type=float, default=PenniConfig.weight_decay, show_default=True,
              help="Adam weight decay during the PENNI phases.")
@click.option("--seed", type=int, default=PenniConfig.seed, show_default=True)
@click.option("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice).")
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

    epochs = (kw["pretrain_epochs"], kw["epochs"], kw["finetune_epochs"])
    if kw["rank"] < 1 or kw["prune_rounds"] < 1 or min(epochs) < 0:
        raise PimcError("--rank and --prune-rounds must be positive and epoch counts non-negative")
    if kw["threads"] is not None:
        if kw["threads"] < 1:
            raise PimcError("--threads must be positive")
        torch.set_num_threads(kw["threads"])
    config = PenniConfig(rank=kw["rank"], epochs=kw["epochs"], swap_every=kw["swap_every"], l1=kw["l1"],
                         group_l1=kw["group_l1"], threshold=kw["threshold"], group_threshold=kw["group_threshold"],
                         prune_rounds=kw["prune_rounds"], residual_l1=kw["residual_l1"],
                         residual_threshold=kw["residual_threshold"], finetune_epochs=kw["finetune_epochs"],
                         lr=kw["lr"], weight_decay=kw["weight_decay"], seed=kw["seed"],
                         progress=not kw["no_progress"])
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
