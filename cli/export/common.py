"""What every training-aware exporter shares: the ``--model`` / ``--input-shape`` options and their
resolution (zoo name, your own ``FILE.onnx``, or ``FILE.py:FACTORY``), the training data, dense
pre-training, giving the exported files the user's input/output names back, and the summary output.

An ONNX model keeps its trained weights (BatchNorms folded on load; no pre-training); a zoo or factory
model is built and pre-trained on ``--data`` first."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ...compiler.errors import PimcError
from ...runtime.datasets import TRAINABLE_HELP

FILE = click.Path(dir_okay=False, path_type=Path)

_SHARED_TAIL = (
    click.option("--batch-size", type=int, default=64, show_default=True),
    click.option("--train-limit", type=click.IntRange(min=1), default=None,
                 help="Train on the first N training images only (smoke runs)."),
    click.option("--in-channels", type=int, default=None, help="Override the model's input channels."),
    click.option("--input-size", type=int, default=None, help="Override the input height/width (e.g. 16)."),
    click.option("--dense-output", type=FILE, default=None, help="Also export the dense pre-trained model."),
    click.option("--dense-checkpoint", type=FILE, default=None,
                 help="torch state_dict of the dense model: loaded if it exists, else written after pre-training."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bars."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
)


def stacked(*options: Callable[[Callable[..., Any]], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One decorator applying ``options`` in the order they show in ``--help``."""
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command
    return apply


shared_options = stacked(*_SHARED_TAIL)


def emit(summary: dict, as_json: bool, render: Callable[[dict], None]) -> None:
    """The summary as JSON or a table; its ``warnings`` also go to stderr, one line each."""
    for text in summary.get("warnings") or []:
        click.echo(f"warning: {text}", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render(summary)


MODEL_HELP = "Zoo model name (pimc models list), your own FILE.onnx, or FILE.py:FACTORY."


def model_options(default: str | None = None, help_text: str = MODEL_HELP) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model`` (required unless ``default``), ``--input-shape`` and ``--data``, in that order."""
    return stacked(
        click.option("--model", "model_name", required=default is None, default=default,
                     show_default=default is not None, help=help_text),
        click.option("--input-shape", default=None, help="C,H,W of a FILE.py:FACTORY model (else its input_shape), "
                     "or the training size of a FILE.onnx with a symbolic height and width."),
        click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}."),
    )


THREADS_OPTION = click.option("--threads", type=click.IntRange(min=1), default=None,
                              help="torch intra-op threads (default: torch's choice; 1 on shared machines).")


def pretraining_options(epochs: int = 30) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--seed``, and ``--epochs`` / ``--lr`` of the dense pre-training of a zoo or factory model."""
    return stacked(
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--epochs", type=click.IntRange(min=0), default=epochs, show_default=True,
                     help="Dense pre-training epochs (as `pimc models train`; none for an ONNX model)."),
        click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training."),
    )


def user_model(kw: dict, build_model=None, get_spec=None, model_input_shape=None, num_classes: int = 10):
    """(module or None for a zoo model, input shape, source ONNX or None). An ONNX model keeps its trained
    weights (no pre-training); a factory's model is pre-trained like a zoo model."""
    name = kw["model_name"]
    if (name.endswith(".onnx") or ".py:" in name) and (kw.get("in_channels") or kw.get("input_size")):
        raise PimcError(f"--model {name}: --in-channels / --input-size apply to zoo models only")
    if name.endswith(".onnx"):
        from ...models.from_onnx import load_onnx_module

        if not Path(name).is_file():
            raise PimcError(f"--model {name}: no such file")
        given = factory_shape(name, kw["input_shape"], None) if kw.get("input_shape") else None
        return load_onnx_module(name, given)
    if ".py:" in name:
        from ...models.from_onnx import load_factory

        module = load_factory(name, num_classes)
        return module, factory_shape(name, kw.get("input_shape"), module), None
    if get_spec is None or model_input_shape is None:
        from ...models.zoo import get_spec, model_input_shape
    get_spec(name)
    return None, input_size(model_input_shape(name, kw.get("in_channels")), kw.get("input_size")), None


def factory_shape(name: str, text: str | None, module: Any) -> tuple[int, int, int]:
    """C,H,W from ``--input-shape`` or the module's ``input_shape`` attribute."""
    text = text or ",".join(str(d) for d in getattr(module, "input_shape", ()))
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise PimcError(f"--model {name}: give --input-shape C,H,W (or an input_shape attribute)")
    return shape  # type: ignore[return-value]


def input_size(shape: tuple[int, int, int], size: int | None) -> tuple[int, int, int]:
    """``--input-size`` overrides a zoo model's height/width."""
    if size is None:
        return shape
    if size < 4:
        raise PimcError(f"--input-size must be at least 4, got {size}")
    return (shape[0], size, size)


@dataclass
class ResolvedModel:
    """The model an exporter trains: the module, its input shape, the training data and, for an ONNX
    file, the source model (already trained; its input/output names are restored on the outputs)."""

    module: Any
    shape: tuple[int, int, int]
    source: Any
    sets: Any
    reference: dict[str, float] | None = None  # the dense model's fp32 size, for the outputs' storage ratio
    input_accuracy: float | None = None  # test accuracy of the model as given (a trained one), when measured

    @property
    def trained(self) -> bool:
        return self.source is not None

    def record_reference(self) -> None:
        """Take the dense model's fp32 size (the user's ONNX, else the module as it is now) before compressing."""
        from ...models.train import dense_reference

        self.reference = dense_reference(self.module, self.shape, self.source)

    def finish(self, output: Path, *others: Path | None) -> None:
        """The written files get the user's input/output names, and the compressed ``output`` the recorded
        dense model as its storage reference (``compiler/storage.py``)."""
        if self.reference is None:
            self.restore_io(output, *others)
            return
        from ...models.from_onnx import finish_output

        finish_output(output, self.source, self.reference)
        self.restore_io(*others)

    def restore_io(self, *paths: Path | None) -> None:
        """Give the written files the user's ONNX input/output names (nothing to do for zoo / factory)."""
        if self.source is None:
            return
        from ...models.from_onnx import rename_io

        for path in paths:
            if path:
                rename_io(path, self.source)


def resolve_model(kw: dict, build: Callable[[int], Any] | None = None) -> ResolvedModel:
    """Resolve ``--model`` and load ``--data`` for it; a zoo model is built by ``build(num_classes)``
    (default: the zoo's builder with ``--in-channels``), seeded with ``--seed``. ``--threads``, when given,
    sets torch's threads first."""
    import torch

    from ...models.train import training_data

    if kw.get("threads"):
        torch.set_num_threads(kw["threads"])

    module, shape, source = user_model(kw)
    sets = training_data(kw["data"], shape, kw["batch_size"], kw["seed"], limit=kw.get("train_limit"))
    classes = max(10, sets.num_classes)
    torch.manual_seed(kw["seed"])
    if module is None:
        if build is None:
            from ...models.zoo import build_model

            module = build_model(kw["model_name"], classes, kw.get("in_channels"))
        else:
            module = build(classes)
    elif source is None and classes != 10:
        module = user_model(kw, num_classes=classes)[0]
    _check_outputs(kw["model_name"], module, shape, sets.num_classes)
    return ResolvedModel(module, shape, source, sets)


def _check_outputs(name: str, module: Any, shape: tuple[int, int, int], classes: int) -> None:
    """The model must produce (batch, ≥ classes) logits for the data's images."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
    except (RuntimeError, ValueError) as exc:
        raise PimcError(f"--model {name}: fails on a {'x'.join(map(str, shape))} input "
                        f"({str(exc).splitlines()[0]})") from None
    finally:
        module.train(was_training)
    if out.dim() != 2 or out.shape[1] < classes:
        raise PimcError(f"--model {name}: outputs {tuple(out.shape)} for a batch of 2, the data has {classes} classes")


def pretrain(model: Any, loader: Any, kw: dict, epochs: int, lr: float, desc: str, augment: Any = None) -> None:
    """Dense pre-training exactly as ``pimc models train`` (or load / save ``--dense-checkpoint``);
    ``augment``: the ``models.augment.Augment`` of the training batches (default none)."""
    import torch

    from ...models.train import train_classifier

    path = kw.get("dense_checkpoint")
    if path is not None and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
        except (RuntimeError, OSError) as exc:
            raise PimcError(f"{path}: not a checkpoint of this model ({str(exc).splitlines()[0]})") from None
        return
    if epochs > 0:
        train_classifier(model, loader, epochs, lr=lr, seed=kw["seed"], progress=not kw.get("no_progress"),
                         desc=desc, augment=augment)
    if path is not None:
        torch.save(model.state_dict(), path)


def pretrain_unless_trained(resolved: ResolvedModel, kw: dict, epochs: int, lr: float, augment: Any = None) -> None:
    """Pre-train a zoo / factory model (an ONNX model is already trained), then record its storage reference."""
    if not resolved.trained:
        pretrain(resolved.module, resolved.sets.loader, kw, epochs, lr, f"train {kw['model_name']}", augment)
    resolved.record_reference()
