"""``pimc models``: list the zoo, export random-init models, train on a dataset."""

from __future__ import annotations

from pathlib import Path

import click

from ..compiler.errors import PimcError
from ..compiler.tables import Table, console
from ..models.zoo import MODELS, build_model, get_spec, model_input_shape
from ..runtime.datasets import TRAINABLE_HELP
from ..runtime.session import evaluate


@click.group("models")
def models_group() -> None:
    """Model zoo: list, export and train the built-in CNNs."""


@models_group.command("list")
def list_command() -> None:
    """List the zoo models with their input shapes."""
    table = Table(title="pimc model zoo")
    for column in ("name", "input (C,H,W)", "classes", "description"):
        table.add_column(column)
    for spec in MODELS.values():
        table.add_row(spec.name, "x".join(map(str, spec.input_shape)), str(spec.num_classes), spec.description)
    console().print(table)


def _export_options(func: click.decorators.FC) -> click.decorators.FC:
    """Options shared by export and train."""
    func = click.option("--opset", type=int, default=None, help="ONNX opset (default 17 legacy, 18 dynamo).")(func)
    func = click.option("--dynamo", is_flag=True, help="Use the torch.export-based (dynamo) exporter.")(func)
    func = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(func)
    func = click.option("--in-channels", type=int, default=None, help="Override the input channel count.")(func)
    func = click.option("--num-classes", type=int, default=None, help="Override the number of classes.")(func)
    func = click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
                        help="Output .onnx file.")(func)
    return click.argument("name")(func)


@models_group.command("export")
@_export_options
def export_command(
    name: str, output: Path, num_classes: int | None, in_channels: int | None, seed: int, dynamo: bool,
    opset: int | None,
) -> None:
    """Export zoo model NAME with seeded random weights to ONNX."""
    import torch

    get_spec(name)
    torch.manual_seed(seed)
    model = build_model(name, num_classes, in_channels)
    export_annotated(model, output, model_input_shape(name, in_channels), dynamo=dynamo, opset=opset)
    click.echo(f"wrote {output}")


def export_annotated(model, output: Path, shape: tuple[int, ...], dynamo: bool = False,
                     opset: int | None = None) -> None:
    """Export to ONNX; a model with LBC layers (CMPNET) also gets the comparator annotation contract, so
    targets lower its anchor / comparator / 1×1 nodes as LBC blocks, exactly as after comparator-conv."""
    from ..models.train import export_onnx
    from ..passes.comparator.exporter import lbc_modules

    export_onnx(model, output, shape, dynamo=dynamo, opset=opset)
    if next(lbc_modules(model), None) is None:
        return
    import onnx

    from ..compiler.modelio import write_model
    from ..passes.comparator.exporter import annotate_lbc_blocks

    proto = onnx.load(str(output))
    annotate_lbc_blocks(proto, model)
    write_model(proto, output)


@models_group.command("train")
@_export_options
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate (cosine decay).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (1 is fastest for small models).")
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (smoke runs).")
def train_command(
    name: str, output: Path, num_classes: int | None, in_channels: int | None, seed: int, dynamo: bool,
    opset: int | None, data: str, epochs: int, lr: float, batch_size: int, threads: int | None,
    train_limit: int | None,
) -> None:
    """Train zoo model NAME on a dataset, export it and report its onnxruntime test accuracy."""
    import torch

    from ..models.train import train_classifier, training_data

    if threads is not None:
        if threads < 1:
            raise PimcError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    spec = get_spec(name)
    shape = model_input_shape(name, in_channels)
    sets = training_data(data, shape, batch_size, seed, limit=train_limit)
    if (spec.task == "sr") != sets.image_targets:
        wanted = "super-resolution data (sr-samples:S or sr:DIR[:S])" if spec.task == "sr" else "labelled images"
        raise PimcError(f"model '{name}' trains on {wanted}, not --data {data}")
    torch.manual_seed(seed)
    if sets.image_targets:
        model = build_model(name, in_channels=in_channels, scale=sets.scale)
    else:
        model = build_model(name, num_classes if num_classes is not None else max(10, sets.num_classes), in_channels)
    train_classifier(model, sets.loader, epochs, lr=lr, seed=seed, desc=f"train {name}")
    export_annotated(model, output, shape, dynamo=dynamo, opset=opset)
    result = evaluate(output, sets.test)
    if not sets.image_targets:
        click.echo(f"wrote {output}: test accuracy {result['accuracy']:.2%} on {result['samples']} samples")
        return
    from ..runtime.images import bicubic

    baseline = sets.test.metric.value(bicubic(sets.test.x, sets.scale), sets.test.y)
    click.echo(f"wrote {output}: test PSNR (Y) {result['accuracy']:.2f} dB against bicubic {baseline:.2f} dB "
               f"({result['accuracy'] - baseline:+.2f} dB) on {result['samples']} held-out tiles")
