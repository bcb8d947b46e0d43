"""``pimc export feature-reg``: train a model, fine-tune it with threshold gates and the channel-L1 penalty on
every conv input after the first, and export one ONNX file serving several sparsity levels."""

from __future__ import annotations

import time

import click
import numpy as np

from ...compiler.errors import PimcError
from ...compiler.tables import Table, console
from ...passes.feature_reg.config import LEVEL_INPUT, PLACEMENTS, FeatureRegConfig
from ...runtime.datasets import TRAINABLE_HELP
from .common import FILE, emit, shared_options

_D = FeatureRegConfig()


def _levels(_ctx, _param, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated zero fractions, got '{text}'") from None


@click.command("feature-reg")
@click.option("--model", "model_name", required=True,
              help="Zoo model name (pimc models list), your own FILE.onnx, or FILE.py:FACTORY.")
@click.option("--input-shape", default=None, help="C,H,W of a FILE.py:FACTORY model (else its input_shape).")
@click.option("--data", default="digits", show_default=True, help=f"Training data: {TRAINABLE_HELP}.")
@click.option("-o", "--output", type=FILE, required=True, help="Gated .onnx file (all levels).")
@click.option("--levels", default=",".join(str(s) for s in _D.levels), show_default=True, callback=_levels,
              help="Target zero fractions of the gated conv inputs, one threshold row each (increasing).")
@click.option("--penalty", type=float, default=_D.penalty, show_default=True,
              help="λ of the per-pixel channel-L1 / RMS penalty on the gated conv inputs.")
@click.option("--reg-epochs", type=int, default=_D.epochs, show_default=True,
              help="Fine-tuning epochs with the penalty and batch-quantile gates.")
@click.option("--ramp", type=float, default=_D.ramp, show_default=True,
              help="Share of the regularized fine-tune over which the targets rise linearly from 0.")
@click.option("--frozen-epochs", type=int, default=_D.frozen_epochs, show_default=True,
              help="Fine-tuning epochs with the calibrated thresholds frozen (0: none).")
@click.option("--reg-lr", type=float, default=_D.lr, show_default=True, help="Adam learning rate of fine-tuning.")
@click.option("--frozen-lr-scale", type=float, default=_D.frozen_lr_scale, show_default=True,
              help="Learning rate of the frozen-threshold epochs, as a fraction of --reg-lr.")
@click.option("--momentum", type=float, default=_D.momentum, show_default=True,
              help="Momentum of the running thresholds while tracking batch quantiles.")
@click.option("--calibration", type=int, default=_D.calibration, show_default=True,
              help="Training images that calibrate the threshold table.")
@click.option("--floor-z", type=float, default=_D.floor_z, show_default=True,
              help="Calibrate each level this many standard errors (over the calibration images) above its "
                   "target, so unseen images still meet it; 0: the exact quantile.")
@click.option("--gate-placement", type=click.Choice(PLACEMENTS), default=_D.placement, show_default=True,
              help="conv-input: a gate in front of each conv; stream: one gate per map the convs read, on its "
                   "producer, so every reader (a residual Add too) and the stored map are gated.")
@click.option("--val-fraction", type=float, default=_D.val_fraction, show_default=True,
              help="Seeded part of the training split held out (never trained on) to pick the default level.")
@click.option("--max-accuracy-drop", type=float, default=_D.max_accuracy_drop, show_default=True,
              help="Default level: the highest whose validation accuracy is within this many points of dense.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True, help="Dense pre-training epochs.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate of pre-training.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch intra-op threads.")
@shared_options
def command(**kw) -> None:
    """Feature Regularization: input-dependent channel sparsity of conv inputs, several levels in one model."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import torch

    from ...models.train import export_onnx, make_loader, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...passes.feature_reg.exporter import export_feature_reg_onnx, feature_regularize, split_validation
    from ...passes.feature_reg.measure import image_convs
    from ...runtime.session import evaluate
    from .common import pretrain, user_model

    config = _config(kw)
    if kw["threads"] < 1:
        raise PimcError(f"--threads must be positive, got {kw['threads']}")
    torch.set_num_threads(kw["threads"])
    seed, progress = kw["seed"], not kw["no_progress"]
    model, shape, source = user_model(kw, build_model, get_spec, model_input_shape)
    sets = training_data(kw["data"], shape, kw["batch_size"], seed, limit=kw["train_limit"])
    if len(sets.train.x) < 2:
        raise PimcError("feature-reg needs at least 2 training images (one is held out for validation)")
    fit, held = split_validation(len(sets.train.x), config.val_fraction, seed)
    x, y = sets.train.x, sets.train.y
    loader = make_loader(x[fit], y[fit], kw["batch_size"], True, seed)
    if model is None:
        torch.manual_seed(seed)
        model = build_model(kw["model_name"], max(10, sets.num_classes), kw["in_channels"])
    started = time.perf_counter()
    if source is None:
        pretrain(model, loader, kw, kw["epochs"], kw["lr"], f"train {kw['model_name']}")
    pretrain_s = time.perf_counter() - started
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    started = time.perf_counter()
    calib = x[fit][: config.calibration]
    result = feature_regularize(model, loader, calib, (x[held], y[held]), shape, config, seed, progress)
    finetune_s = time.perf_counter() - started
    export_feature_reg_onnx(result, kw["output"], shape)
    if source is not None:
        from ...models.from_onnx import rename_io

        for path in (kw["output"], kw["dense_output"]):
            if path:
                rename_io(path, source)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
        "config": {**config.__dict__, "levels": list(config.levels)},
        "train_samples": int(len(fit)), "pretrain_seconds": round(pretrain_s, 1),
        "finetune_seconds": round(finetune_s, 1), **result.summary(),
    }
    summary["ungated_convs_onnx"] = image_convs(kw["output"])
    summary["test"] = measure_levels(kw["output"], sets.test, len(config.levels), evaluate)
    default = summary["test"][result.default_level]
    summary["accuracy_gated"] = default["accuracy"]
    summary["zero_fraction_default"] = default["zero_fraction"]
    if kw["dense_output"]:
        summary["dense_output"] = str(kw["dense_output"])
        summary["accuracy_dense"] = evaluate(kw["dense_output"], sets.test, repeats=1)["accuracy"]
        summary["zero_fraction_dense"] = _zero_fractions(kw["dense_output"], sets.test.x, None)
    return summary


def measure_levels(path, test, count: int, evaluate) -> list[dict]:
    """Per level, on onnxruntime and the test split: accuracy and the zero fraction of every Conv input."""
    rows = []
    for level in range(count):
        logits = _predict(path, test.x, level)
        acc = float((logits.argmax(axis=1) == test.y).mean())
        rows.append({"level": level, "accuracy": acc, "zero_fraction": _zero_fractions(path, test.x, level)})
    return rows


def _predict(path, x: np.ndarray, level: int) -> np.ndarray:
    from ...compiler.modelio import read_model
    from ...compiler.sessions import open_session, session_options

    options = session_options()
    options.intra_op_num_threads = 1
    session = open_session(read_model(path), options)
    data = session.get_inputs()[0].name
    out = [session.run(None, {data: x[i:i + 128].astype(np.float32), LEVEL_INPUT: np.array(level, np.int64)})[0]
           for i in range(0, len(x), 128)]
    return np.concatenate(out)


def _zero_fractions(path, x: np.ndarray, level: int | None) -> dict[str, float]:
    from ...passes.feature_reg.measure import conv_input_zero_fractions

    return {k: round(v, 4) for k, v in conv_input_zero_fractions(path, x, level).items()}


def _config(kw: dict) -> FeatureRegConfig:
    config = FeatureRegConfig(
        levels=kw["levels"], penalty=kw["penalty"], epochs=kw["reg_epochs"], ramp=kw["ramp"],
        frozen_epochs=kw["frozen_epochs"], lr=kw["reg_lr"], calibration=kw["calibration"],
        val_fraction=kw["val_fraction"], max_accuracy_drop=kw["max_accuracy_drop"], floor_z=kw["floor_z"],
        placement=kw["gate_placement"], frozen_lr_scale=kw["frozen_lr_scale"], momentum=kw["momentum"],
    )
    config.check()
    return config


def _print_summary(s: dict) -> None:
    table = Table(title=f"feature-regularized {s['model']} → {s['output']} (default level {s['default_level']})")
    table.add_column("level")
    table.add_column("target", justify="right")
    table.add_column("val acc", justify="right")
    table.add_column("test acc (onnxruntime)", justify="right")
    table.add_column("conv-input zeros mean / min (after the first)", justify="right")
    skip = set(s["ungated_convs_onnx"]) if "ungated_convs_onnx" in s else set()
    if "accuracy_dense" in s:
        mean, low = _mean_min(s["zero_fraction_dense"], skip)
        table.add_row("dense", "–", f"{s['val_accuracy_dense']:.2%}", f"{s['accuracy_dense']:.2%}",
                      f"{mean:.1%} / {low:.1%}")
    for row in s["test"]:
        k = row["level"]
        mean, low = _mean_min(row["zero_fraction"], skip)
        mark = " (default)" if k == s["default_level"] else ""
        table.add_row(f"{k}{mark}", f"{s['levels'][k]:.0%}", f"{s['val_accuracy'][k]:.2%}",
                      f"{row['accuracy']:.2%}", f"{mean:.1%} / {low:.1%}")
    console().print(table)
    if s.get("gate_placement") == "stream":
        console().print(f"gates: {s['stream_gates']} stream (on the map's producer), {s['fallback_gates']} "
                        "conv-input fallbacks (the map has no producing module)")
    layers = Table(title="zero fraction of each Conv input, default level, test split")
    layers.add_column("conv")
    layers.add_column("zeros", justify="right")
    for name, frac in s["zero_fraction_default"].items():
        layers.add_row(name, f"{frac:.1%}")
    console().print(layers)


def _mean_min(fractions: dict[str, float], skip: set[str]) -> tuple[float, float]:
    values = [v for k, v in fractions.items() if k not in skip] or [0.0]
    return float(np.mean(values)), float(np.min(values))
