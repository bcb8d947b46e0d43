"""``pimc export comparator``: train an LBC / CMPNET network, or a zoo model, your own ONNX or a factory's
model with its convs replaced by LBC layers, and export it with the comparator annotations."""

from __future__ import annotations

import click

from ...compiler.errors import PimcError
from ...passes.comparator.config import LBCConfig, LBCTraining
from .common import FILE, emit, model_options
from .options import build, config_options

SPECIAL = ("cmpnet", "cmpnet-cnn")


@click.command("comparator")
@model_options(default="cmpnet", help_text="cmpnet (CMPNET-style LBC network), cmpnet-cnn (its plain-CNN twin), "
               "or a model whose k×k convs are replaced by LBC layers: a zoo model name, your own FILE.onnx "
               "(its other layers keep their trained weights) or FILE.py:FACTORY.")
@click.option("-o", "--output", type=FILE, required=True)
@click.option("--seed", type=int, default=LBCTraining.seed, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--train-limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (smoke runs).")
@config_options(LBCConfig, LBCTraining, defaults={"comparator": None})  # cmpnet: binary, other models: relu
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def command(**kw) -> None:
    """Train a comparator (LBC) network on a dataset and export annotated ONNX."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def _print_summary(s: dict) -> None:
    click.echo(f"replaced {len(s['replaced'])} convs by LBC layers; annotated {len(s['annotated'])} LBC blocks")
    given = f" (the model as given: {s['input_accuracy']:.2%})" if "input_accuracy" in s else ""
    click.echo(f"wrote {s['output']}: test accuracy {s['test_accuracy']:.2%} on {s['test_samples']} samples{given}")


def run_export(**kw) -> dict:
    from ...models.train import train_classifier
    from ...passes.comparator.exporter import export_lbc_onnx, freeze_all_but_pointwise
    from ...runtime.session import evaluate

    training = build(LBCTraining, kw)
    if not 0 < kw["density"] <= 1:
        raise PimcError(f"--density must be in (0, 1], got {kw['density']}")
    model, shape, replaced, resolved, sets = _build(kw)
    if not replaced and kw["model_name"] != "cmpnet-cnn":
        raise PimcError(f"--model {kw['model_name']}: no ungrouped square k×k conv (k ≥ {kw['min_kernel']}) "
                        "to replace by an LBC layer")
    if training.train == "pointwise":
        freeze_all_but_pointwise(model)
    train_classifier(model, sets.loader, training.epochs, lr=training.lr, seed=training.seed,
                     progress=training.progress, desc=f"train {kw['model_name']}")
    annotated = export_lbc_onnx(model, kw["output"], shape)
    if resolved is not None:
        resolved.finish(kw["output"])
    result = evaluate(kw["output"], sets.test, repeats=1)
    summary = {"model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
               "pretrained": False, "replaced": replaced, "annotated": annotated,
               "test_accuracy": result["accuracy"], "test_samples": result["samples"]}
    given = resolved.input_accuracy if resolved is not None else None
    if given is not None:
        summary["input_accuracy"] = given
        lost = 100 * (given - (result["accuracy"] or 0.0))
        if lost > LOSS_WARNING_POINTS:
            summary["warnings"] = [
                f"the LBC network loses {lost:.1f} points against the model as given ({given:.2%} -> "
                f"{result['accuracy']:.2%} on the test split); try --variant separable --comparator binary, "
                "more --epochs, or --train pointwise"]
    return summary


LOSS_WARNING_POINTS = 1.0  # pimc's default accuracy budget


def _build(kw: dict):
    """(network to train, input shape, replaced conv names, resolved user model or None, training data):
    cmpnet / cmpnet-cnn, or a zoo / ONNX / factory model with its convs replaced."""
    import torch

    from ...models import cmpnet
    from ...models.train import evaluate_torch, training_data
    from ...passes.comparator.exporter import lbc_modules, replace_convs
    from .common import resolve_model

    name, anchors, density, comparator, seed = (kw["model_name"], kw["anchors"], kw["density"], kw["comparator"],
                                                kw["seed"])
    if name in SPECIAL:
        torch.manual_seed(seed)
        if name == "cmpnet":
            model = cmpnet.build_cmpnet(anchors_per_channel=anchors or cmpnet.ANCHORS_PER_CHANNEL, density=density,
                                        comparator=comparator or cmpnet.COMPARATOR, seed=seed)
            replaced = [n for n, _ in lbc_modules(model)]
        else:
            model, replaced = cmpnet.build_cmpnet_cnn(), []
        sets = training_data(kw["data"], cmpnet.INPUT_SHAPE, kw["batch_size"], seed, limit=kw["train_limit"])
        return model, cmpnet.INPUT_SHAPE, replaced, None, sets
    resolved = resolve_model(kw)
    resolved.record_reference()  # the CNN as brought: LBC layers change the parameter count
    model = resolved.module
    if resolved.trained and resolved.sets.test.y is not None:  # the user's trained model, before substitution
        resolved.input_accuracy = evaluate_torch(model, resolved.sets.test.x, resolved.sets.test.y)
    lbc = build(LBCConfig, kw, comparator=comparator or LBCConfig.comparator)
    replaced = replace_convs(model, lbc.anchors, lbc.density, lbc.variant == "separable", lbc.comparator, seed,
                             lbc.min_kernel, max_anchors=lbc.max_anchors)
    return model, resolved.shape, replaced, resolved, resolved.sets
