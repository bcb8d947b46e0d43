"""``pimc export comparator``: train an LBC / CMPNET network (or a zoo model with its convs replaced) and
export it with the comparator annotations."""

from __future__ import annotations

from pathlib import Path

import click

from ...compiler.errors import PimcError
from ...runtime.datasets import TRAINABLE_HELP
from .comparator_conv import LBCConfig

SPECIAL = ("cmpnet", "cmpnet-cnn")


@click.command("comparator")
@click.option("--model", "model_name", default="cmpnet", show_default=True,
              help="cmpnet (CMPNET-style LBC network), cmpnet-cnn (its plain-CNN twin) or a zoo model "
                   "whose k×k convs are replaced by LBC layers.")
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--anchors", type=int, default=LBCConfig.anchors, show_default=True,
              help="Anchors: per input channel (separable) or per layer (lbc); 0 = automatic "
                   "(8 per channel for cmpnet; k² per channel / Cin·k² per layer, at most "
                   f"{LBCConfig.max_anchors}, otherwise).")
@click.option("--density", type=float, default=LBCConfig.density, show_default=True,
              help="Fraction of non-zero anchor weights.")
@click.option("--variant", type=click.Choice(["separable", "lbc"]), default=LBCConfig.variant, show_default=True,
              help="Depthwise (CMPNET) or dense (LBCNN) anchor convs, for zoo models (cmpnet is separable).")
@click.option("--comparator", type=click.Choice(["binary", "relu"]), default=None,
              help="Comparison bit [a>0] (CMPNET) or ReLU (LBCNN)  [default: binary for cmpnet, "
                   f"{LBCConfig.comparator} for zoo models]")
@click.option("--train", "train_what", type=click.Choice(["all", "pointwise"]), default="all", show_default=True,
              help="Train every parameter, or only the LBC 1×1 weights (the rest keeps its initialisation).")
def command(
    model_name: str, data: str, output: Path, seed: int, epochs: int, lr: float, batch_size: int, anchors: int,
    density: float, variant: str, comparator: str | None, train_what: str,
) -> None:
    """Train a comparator (LBC) network on a dataset and export annotated ONNX."""
    import torch

    from ...models.train import train_classifier, training_data
    from ...runtime.session import evaluate
    from .exporter import export_lbc_onnx, freeze_all_but_pointwise

    if batch_size < 1 or epochs < 1:
        raise PimcError("--epochs and --batch-size must be positive")
    if not 0 < density <= 1:
        raise PimcError(f"--density must be in (0, 1], got {density}")
    torch.manual_seed(seed)
    model, shape, replaced = _build(model_name, anchors, density, variant, comparator, seed)
    if train_what == "pointwise":
        freeze_all_but_pointwise(model)
    sets = training_data(data, shape, batch_size, seed)
    train_classifier(model, sets.loader, epochs, lr=lr, seed=seed, desc=f"train {model_name}")
    annotated = export_lbc_onnx(model, output, shape)
    result = evaluate(output, sets.test, repeats=1)
    click.echo(f"replaced {len(replaced)} convs by LBC layers; annotated {len(annotated)} LBC blocks")
    click.echo(f"wrote {output}: test accuracy {result['accuracy']:.2%} on {result['samples']} samples")


def _build(name: str, anchors: int, density: float, variant: str, comparator: str | None, seed: int):
    """The network to train: cmpnet / cmpnet-cnn, or a zoo model with its convs replaced."""
    from ...models import cmpnet
    from ...models.zoo import build_model, get_spec, model_input_shape
    from .exporter import lbc_modules, replace_convs

    if name == "cmpnet":
        model = cmpnet.build_cmpnet(anchors_per_channel=anchors or cmpnet.ANCHORS_PER_CHANNEL, density=density,
                                    comparator=comparator or cmpnet.COMPARATOR, seed=seed)
        return model, cmpnet.INPUT_SHAPE, [n for n, _ in lbc_modules(model)]
    if name == "cmpnet-cnn":
        return cmpnet.build_cmpnet_cnn(), cmpnet.INPUT_SHAPE, []
    get_spec(name)
    model = build_model(name, 10)
    replaced = replace_convs(model, anchors, density, variant == "separable", comparator or LBCConfig.comparator,
                             seed)
    return model, model_input_shape(name), replaced
