"""``pimc export decompose``: train a zoo model with PENNI kernel decomposition and export it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...compiler.errors import PimcError
from ...runtime.datasets import TRAINABLE_HELP
from .config import PenniConfig


@click.command("decompose")
@click.option("--model", "model_name", required=True, help="Zoo model (see `pimc models list`).")
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .onnx (two-conv decomposed form, annotated, shrunk).")
@click.option("--rank", type=int, default=PenniConfig.rank, show_default=True, help="Basis kernels per layer (d).")
@click.option("--pretrain-epochs", type=int, default=15, show_default=True, help="Dense training before decomposing.")
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
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=PenniConfig.seed, show_default=True)
@click.option("--dense-output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also export the dense model after pre-training (the baseline trained the same way).")
@click.option("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def command(model_name: str, data: str, output: Path, rank: int, pretrain_epochs: int, epochs: int,
            swap_every: int, finetune_epochs: int, l1: float, group_l1: float, threshold: float,
            group_threshold: float, residual_l1: float,
            residual_threshold: float, prune_rounds: int, lr: float, batch_size: int, seed: int,
            dense_output: Path | None, threads: int | None, no_progress: bool) -> None:
    """Train zoo MODEL with PENNI (decompose, alternate, L1, prune, fine-tune, shrink) and export ONNX."""
    import torch

    from ...models.train import export_onnx, train_classifier, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...runtime.session import evaluate
    from ._common import stored_conv_params
    from .exporter import export_penni, penni_compress

    if rank < 1 or batch_size < 1 or prune_rounds < 1 or min(pretrain_epochs, epochs, finetune_epochs) < 0:
        raise PimcError("--rank, --batch-size and --prune-rounds must be positive and epoch counts non-negative")
    if threads is not None:
        if threads < 1:
            raise PimcError("--threads must be positive")
        torch.set_num_threads(threads)
    get_spec(model_name)
    shape = model_input_shape(model_name)
    sets = training_data(data, shape, batch_size, seed)
    test, loader = sets.test, sets.loader
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes=sets.num_classes)
    if pretrain_epochs:
        train_classifier(model, loader, pretrain_epochs, lr=lr, seed=seed, progress=not no_progress,
                         desc=f"dense {model_name}")
    dense_params = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    if dense_output:
        export_onnx(model, dense_output, shape)
        dense_acc = evaluate(dense_output, test)["accuracy"]
        click.echo(f"wrote {dense_output}: dense test accuracy {dense_acc:.2%}")
    config = PenniConfig(rank=rank, epochs=epochs, swap_every=swap_every, l1=l1, group_l1=group_l1,
                         threshold=threshold, group_threshold=group_threshold, prune_rounds=prune_rounds,
                         residual_l1=residual_l1, residual_threshold=residual_threshold,
                         finetune_epochs=finetune_epochs, lr=lr, seed=seed, progress=not no_progress)
    stats = penni_compress(model, loader, config)
    proto = export_penni(model, output, shape)
    result = evaluate(proto, test)
    stored = stored_conv_params(proto)
    summary = {
        "output": str(output), "test_accuracy": result["accuracy"],
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
    click.echo(json.dumps(summary, indent=1))
    click.echo(f"wrote {output}: test accuracy {result['accuracy']:.2%}, conv weights stored "
               f"{stored}/{dense_params} ({1 - stored / max(dense_params, 1):.2%} removed)")
